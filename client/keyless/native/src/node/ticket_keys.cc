// Session-ticket key rings (ticket_keys.h). Everything but the ticket callback
// runs on the JavaScript thread that owns the ring; the callback runs on whichever
// thread runs the handshake, so rings are shared through a mutex.
#include "ticket_keys.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include <cstdint>
#include <cstring>
#include <ctime>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace keyless {
namespace {

constexpr size_t kNameBytes = 16;
constexpr size_t kHmacBytes = 32;
constexpr size_t kAesBytes = 32;
constexpr size_t kKeyBytes = kNameBytes + kHmacBytes + kAesBytes;
constexpr size_t kTimesPerKey = 3;

struct TicketKey {
  unsigned char name[kNameBytes];
  unsigned char hmac[kHmacBytes];
  unsigned char aes[kAesBytes];
  int64_t not_before = 0;
  int64_t encrypt_until = 0;
  int64_t decrypt_until = 0;
};

struct TicketStats {
  uint64_t issued = 0;       // tickets encrypted
  uint64_t no_key = 0;       // no key to encrypt with now: no ticket sent
  uint64_t resumed = 0;      // decrypted with the current key
  uint64_t renewed = 0;      // decrypted with another key still in its window: new ticket
  uint64_t unknown_key = 0;  // name not in the ring: full handshake
  uint64_t expired = 0;      // known key past its decrypt window: full handshake
};

struct Ring {
  std::mutex mutex;
  std::vector<TicketKey> keys;
  TicketStats stats;
  SSL_CTX* ctx = nullptr;  // installed on (one reference held), or null
};
using RingRef = std::shared_ptr<Ring>;

std::mutex g_mutex;  // guards g_rings, g_next_id, g_ctx_index and each ring's ctx
std::unordered_map<uint32_t, RingRef> g_rings;
uint32_t g_next_id = 1;
int g_ctx_index = -1;
int g_ssl_index = -1;

thread_local bool t_capturing = false;
thread_local SSL* t_captured = nullptr;

void CaptureNewSsl(void* parent, void*, CRYPTO_EX_DATA*, int, long, void*) {
  if (t_capturing && t_captured == nullptr) t_captured = static_cast<SSL*>(parent);
}

void FreeRingHolder(void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) { delete static_cast<RingRef*>(ptr); }

bool EnsureIndexes() {
  if (g_ctx_index < 0) g_ctx_index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, FreeRingHolder);
  if (g_ssl_index < 0) g_ssl_index = SSL_get_ex_new_index(0, nullptr, CaptureNewSsl, nullptr, nullptr);
  return g_ctx_index >= 0 && g_ssl_index >= 0;
}

// The ring of the context a ticket is made or opened on. After an SNI switch the
// connection's SSL_CTX is the SNI context: the only installed ring is then used.
RingRef RingOf(SSL* ssl) {
  std::lock_guard<std::mutex> lock(g_mutex);
  auto* holder = static_cast<RingRef*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), g_ctx_index));
  if (holder != nullptr) return *holder;
  RingRef only;
  for (const auto& [id, ring] : g_rings) {
    if (ring->ctx == nullptr) continue;
    if (only) return nullptr;
    only = ring;
  }
  return only;
}

bool SetMacKey(EVP_MAC_CTX* mac, const unsigned char* key) {
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, const_cast<unsigned char*>(key), kHmacBytes),
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
      OSSL_PARAM_construct_end(),
  };
  return EVP_MAC_CTX_set_params(mac, params) == 1;
}

// The key new tickets are encrypted with: the newest whose encryption window holds now.
const TicketKey* EncryptionKey(const Ring& ring, int64_t now) {
  const TicketKey* best = nullptr;
  for (const TicketKey& key : ring.keys) {
    if (key.not_before <= now && now < key.encrypt_until && (best == nullptr || key.not_before > best->not_before)) best = &key;
  }
  return best;
}

// OpenSSL's ticket callback: 1 ok, 2 ok but issue a new ticket, 0 no key (no
// ticket / full handshake), -1 error.
int TicketCallback(SSL* ssl, unsigned char* key_name, unsigned char* iv, EVP_CIPHER_CTX* cipher, EVP_MAC_CTX* mac,
                   int enc) {
  RingRef ring = RingOf(ssl);
  if (!ring) return 0;
  const int64_t now = static_cast<int64_t>(std::time(nullptr));
  std::lock_guard<std::mutex> lock(ring->mutex);
  const TicketKey* current = EncryptionKey(*ring, now);
  if (enc == 1) {
    if (current == nullptr) {
      ring->stats.no_key++;
      return 0;
    }
    std::memcpy(key_name, current->name, kNameBytes);
    if (RAND_bytes(iv, EVP_CIPHER_get_iv_length(EVP_aes_256_cbc())) != 1 || !SetMacKey(mac, current->hmac) ||
        EVP_EncryptInit_ex(cipher, EVP_aes_256_cbc(), nullptr, current->aes, iv) != 1) {
      return -1;
    }
    ring->stats.issued++;
    return 1;
  }
  const TicketKey* key = nullptr;
  for (const TicketKey& candidate : ring->keys) {
    if (std::memcmp(candidate.name, key_name, kNameBytes) == 0) key = &candidate;
  }
  if (key == nullptr) {
    ring->stats.unknown_key++;
    return 0;
  }
  if (now >= key->decrypt_until) {
    ring->stats.expired++;
    return 0;
  }
  if (!SetMacKey(mac, key->hmac) || EVP_DecryptInit_ex(cipher, EVP_aes_256_cbc(), nullptr, key->aes, iv) != 1) {
    return -1;
  }
  if (key == current) {
    ring->stats.resumed++;
    return 1;
  }
  ring->stats.renewed++;
  return 2;
}

// Takes the ring off its context (g_mutex held).
void Detach(Ring& ring) {
  SSL_CTX* ctx = ring.ctx;
  if (ctx == nullptr) return;
  SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, nullptr);
  delete static_cast<RingRef*>(SSL_CTX_get_ex_data(ctx, g_ctx_index));
  SSL_CTX_set_ex_data(ctx, g_ctx_index, nullptr);
  SSL_CTX_free(ctx);
  ring.ctx = nullptr;
}

// ---- N-API ----------------------------------------------------------------------------

napi_value Throw(napi_env env, const std::string& message) {
  napi_throw_error(env, nullptr, ("keyless: " + message).c_str());
  return nullptr;
}

napi_value Undefined(napi_env env) {
  napi_value result;
  napi_get_undefined(env, &result);
  return result;
}

bool ReadBytes(napi_env env, napi_value value, std::vector<unsigned char>* out) {
  bool is_buffer = false;
  if (napi_is_buffer(env, value, &is_buffer) != napi_ok || !is_buffer) return false;
  void* data = nullptr;
  size_t length = 0;
  if (napi_get_buffer_info(env, value, &data, &length) != napi_ok) return false;
  const unsigned char* p = static_cast<const unsigned char*>(data);
  out->assign(p, p + length);
  return true;
}

// The ring named by args[0], or null.
RingRef ArgRing(napi_env env, napi_value* args, size_t argc) {
  uint32_t id = 0;
  if (argc < 1 || napi_get_value_uint32(env, args[0], &id) != napi_ok) return nullptr;
  std::lock_guard<std::mutex> lock(g_mutex);
  auto it = g_rings.find(id);
  return it == g_rings.end() ? nullptr : it->second;
}

// The ring named by a call's only argument, or null.
RingRef OnlyArgRing(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value args[1];
  if (napi_get_cb_info(env, info, &argc, args, nullptr, nullptr) != napi_ok) return nullptr;
  return ArgRing(env, args, argc);
}

// ticketRingCreate(): number
napi_value CreateJs(napi_env env, napi_callback_info) {
  uint32_t id;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    if (!EnsureIndexes()) return Throw(env, "cannot allocate OpenSSL ex_data indexes");
    id = g_next_id++;
    g_rings.emplace(id, std::make_shared<Ring>());
  }
  napi_value result;
  napi_create_uint32(env, id, &result);
  return result;
}

// ticketRingSetKeys(ring, keys: Buffer (n x name16|hmac32|aes32), times: Float64Array (n x notBefore, encryptUntil, decryptUntil))
napi_value SetKeysJs(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value args[3];
  if (napi_get_cb_info(env, info, &argc, args, nullptr, nullptr) != napi_ok) return nullptr;
  RingRef ring = ArgRing(env, args, argc);
  std::vector<unsigned char> bytes;
  bool is_typedarray = false;
  if (!ring || argc < 3 || !ReadBytes(env, args[1], &bytes) || napi_is_typedarray(env, args[2], &is_typedarray) != napi_ok ||
      !is_typedarray) {
    return Throw(env, "ticketRingSetKeys(ring, keys, times)");
  }
  napi_typedarray_type type;
  size_t count = 0;
  void* data = nullptr;
  if (napi_get_typedarray_info(env, args[2], &type, &count, &data, nullptr, nullptr) != napi_ok ||
      type != napi_float64_array || bytes.size() % kKeyBytes != 0 || count != bytes.size() / kKeyBytes * kTimesPerKey) {
    return Throw(env, "ticketRingSetKeys: keys must be 80 bytes per key and times 3 numbers per key");
  }
  const double* times = static_cast<const double*>(data);
  std::vector<TicketKey> keys(bytes.size() / kKeyBytes);
  for (size_t i = 0; i < keys.size(); i++) {
    const unsigned char* p = bytes.data() + i * kKeyBytes;
    std::memcpy(keys[i].name, p, kNameBytes);
    std::memcpy(keys[i].hmac, p + kNameBytes, kHmacBytes);
    std::memcpy(keys[i].aes, p + kNameBytes + kHmacBytes, kAesBytes);
    keys[i].not_before = static_cast<int64_t>(times[i * kTimesPerKey]);
    keys[i].encrypt_until = static_cast<int64_t>(times[i * kTimesPerKey + 1]);
    keys[i].decrypt_until = static_cast<int64_t>(times[i * kTimesPerKey + 2]);
  }
  OPENSSL_cleanse(bytes.data(), bytes.size());
  std::lock_guard<std::mutex> lock(ring->mutex);
  OPENSSL_cleanse(ring->keys.data(), ring->keys.size() * sizeof(TicketKey));
  ring->keys.swap(keys);
  return Undefined(env);
}

// ticketRingBeginCapture(): the next SSL created on this thread is the one Install() uses.
napi_value BeginCaptureJs(napi_env env, napi_callback_info) {
  t_capturing = true;
  t_captured = nullptr;
  return Undefined(env);
}

// ticketRingEndCapture(): forget any captured SSL (it may be freed from now on).
napi_value EndCaptureJs(napi_env env, napi_callback_info) {
  t_capturing = false;
  t_captured = nullptr;
  return Undefined(env);
}

// ticketRingInstall(ring): installs the ring on the SSL_CTX of the SSL captured since
// BeginCapture (moving it off the context it was on).
napi_value InstallJs(napi_env env, napi_callback_info info) {
  RingRef ring = OnlyArgRing(env, info);
  if (!ring) return Throw(env, "ticketRingInstall(ring)");
  SSL* ssl = t_captured;
  t_capturing = false;
  t_captured = nullptr;
  if (ssl == nullptr) return Throw(env, "no TLS connection was created on the server's secure context; cannot reach its SSL_CTX");
  SSL_CTX* ctx = SSL_get_SSL_CTX(ssl);
  std::lock_guard<std::mutex> lock(g_mutex);
  if (ring->ctx != ctx) {
    auto* other = static_cast<RingRef*>(SSL_CTX_get_ex_data(ctx, g_ctx_index));
    if (other != nullptr) return Throw(env, "this server already shares ticket keys (another shareTicketKeys handle is open)");
    Detach(*ring);
    if (SSL_CTX_up_ref(ctx) != 1) return Throw(env, "SSL_CTX_up_ref failed");
    auto* holder = new RingRef(ring);
    if (SSL_CTX_set_ex_data(ctx, g_ctx_index, holder) != 1) {
      delete holder;
      SSL_CTX_free(ctx);
      return Throw(env, "SSL_CTX_set_ex_data failed");
    }
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, TicketCallback);
    ring->ctx = ctx;
  }
  return Undefined(env);
}

// ticketRingUninstall(ring): the server's own ticket key is used again.
napi_value UninstallJs(napi_env env, napi_callback_info info) {
  RingRef ring = OnlyArgRing(env, info);
  if (!ring) return Throw(env, "ticketRingUninstall(ring)");
  std::lock_guard<std::mutex> lock(g_mutex);
  Detach(*ring);
  return Undefined(env);
}

// ticketRingStats(ring): counters of the ring's ticket outcomes
napi_value StatsJs(napi_env env, napi_callback_info info) {
  RingRef ring = OnlyArgRing(env, info);
  if (!ring) return Throw(env, "ticketRingStats(ring)");
  TicketStats stats;
  size_t keys = 0;
  {
    std::lock_guard<std::mutex> lock(ring->mutex);
    stats = ring->stats;
    keys = ring->keys.size();
  }
  const std::pair<const char*, uint64_t> fields[] = {
      {"issued", stats.issued}, {"noKey", stats.no_key},        {"resumed", stats.resumed},
      {"renewed", stats.renewed}, {"unknownKey", stats.unknown_key}, {"expired", stats.expired},
      {"keys", keys},
  };
  napi_value result;
  if (napi_create_object(env, &result) != napi_ok) return nullptr;
  for (const auto& [name, value] : fields) {
    napi_value number;
    if (napi_create_double(env, static_cast<double>(value), &number) != napi_ok ||
        napi_set_named_property(env, result, name, number) != napi_ok) {
      return nullptr;
    }
  }
  return result;
}

// ticketRingDestroy(ring): uninstalls it and wipes its keys.
napi_value DestroyJs(napi_env env, napi_callback_info info) {
  RingRef ring = OnlyArgRing(env, info);
  if (!ring) return Undefined(env);
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    Detach(*ring);
    for (auto it = g_rings.begin(); it != g_rings.end(); ++it) {
      if (it->second == ring) {
        g_rings.erase(it);
        break;
      }
    }
  }
  std::lock_guard<std::mutex> lock(ring->mutex);
  OPENSSL_cleanse(ring->keys.data(), ring->keys.size() * sizeof(TicketKey));
  ring->keys.clear();
  return Undefined(env);
}

}  // namespace

bool RegisterTicketKeyFunctions(napi_env env, napi_value exports) {
  const napi_property_descriptor methods[] = {
      {"ticketRingCreate", nullptr, CreateJs, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"ticketRingSetKeys", nullptr, SetKeysJs, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"ticketRingBeginCapture", nullptr, BeginCaptureJs, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"ticketRingEndCapture", nullptr, EndCaptureJs, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"ticketRingInstall", nullptr, InstallJs, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"ticketRingUninstall", nullptr, UninstallJs, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"ticketRingStats", nullptr, StatsJs, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"ticketRingDestroy", nullptr, DestroyJs, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
  };
  return napi_define_properties(env, exports, sizeof(methods) / sizeof(methods[0]), methods) == napi_ok;
}

}  // namespace keyless
