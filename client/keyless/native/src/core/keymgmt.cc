// Key management and PEM decoder for keyless keys.
//
// The decoder turns "-----BEGIN HSM GATEWAY KEYLESS KEY-----" into a KeylessKey, so
// the stock `key:` option of Node's TLS loads it through PEM_read_bio_PrivateKey.
// The keymgmt answers every parameter query by delegating to the public half, and
// refuses any export that would include a private part.
#include <openssl/core_names.h>
#include <openssl/core_object.h>
#include <openssl/params.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cstring>

#include "keyless_key.h"
#include "provider.h"

namespace keyless {
namespace {

// ---- key reference PEM body -------------------------------------------------------
// "HSMGWKL1" | u16be len | bridge id | u16be len | key name | SubjectPublicKeyInfo DER
// The magic makes the body unparseable as any standard DER structure, so no other
// decoder can mistake it for a public key. keyless-key-pem.ts writes the same layout.
constexpr unsigned char kMagic[8] = {'H', 'S', 'M', 'G', 'W', 'K', 'L', '1'};

bool TakeString(const unsigned char** p, const unsigned char* end, std::string* out) {
  if (end - *p < 2) return false;
  size_t len = (static_cast<size_t>((*p)[0]) << 8) | (*p)[1];
  *p += 2;
  if (len == 0 || static_cast<size_t>(end - *p) < len) return false;
  out->assign(reinterpret_cast<const char*>(*p), len);
  *p += len;
  return true;
}

// Parses the PEM body; nullptr (with an error raised) when malformed.
KeylessKey* ParseBody(const unsigned char* data, long len) {
  const unsigned char* p = data;
  const unsigned char* end = data + len;
  std::string bridge_id, key_name;
  if (len < static_cast<long>(sizeof(kMagic)) || std::memcmp(p, kMagic, sizeof(kMagic)) != 0) {
    RaiseError(kBadKeyPem, "keyless: key PEM body has an unknown format");
    return nullptr;
  }
  p += sizeof(kMagic);
  if (!TakeString(&p, end, &bridge_id) || !TakeString(&p, end, &key_name)) {
    RaiseError(kBadKeyPem, "keyless: key PEM body is truncated");
    return nullptr;
  }
  EVP_PKEY* pub = d2i_PUBKEY_ex(nullptr, &p, static_cast<long>(end - p), LibCtx(), kNotThisProvider);
  if (pub == nullptr) {
    RaiseError(kBadKeyPem, "keyless: key PEM for '%s' holds no valid public key", key_name.c_str());
    return nullptr;
  }
  KeyType type;
  if (EVP_PKEY_is_a(pub, "EC")) {
    type = KeyType::kEc;
  } else if (EVP_PKEY_is_a(pub, "RSA")) {
    type = KeyType::kRsa;
  } else if (EVP_PKEY_is_a(pub, "ED25519")) {
    type = KeyType::kEd25519;
  } else {
    EVP_PKEY_free(pub);
    RaiseError(kBadKeyPem, "keyless: key '%s' is not EC, RSA or Ed25519", key_name.c_str());
    return nullptr;
  }
  KeylessKey* key = new KeylessKey(type);
  key->pub = pub;
  key->bridge_id = bridge_id;
  key->key_name = key_name;
  return key;
}

// ---- decoder ----------------------------------------------------------------------

// Reads one line (without the newline) from a core BIO, byte by byte so that the
// BIO is left right after our PEM block. False at end of input or over budget.
bool ReadLine(OSSL_CORE_BIO* in, std::string* line, size_t* budget) {
  line->clear();
  while (*budget > 0) {
    char c;
    size_t n = 0;
    if (!ReadCoreBio(in, &c, 1, &n) || n == 0) return !line->empty();
    --*budget;
    if (c == '\n') return true;
    if (c != '\r') line->push_back(c);
  }
  return false;
}

// Decoders and the cipher keep no per-operation state, but newctx must not return
// NULL (that reads as failure). The provider context may itself be NULL: it is the
// default library context.
int g_stateless;

template <KeyType kType>
void* DecoderNewCtx(void*) { return &g_stateless; }
void DecoderFreeCtx(void*) {}
int DecoderDoesSelection(void*, int) { return 1; }

template <KeyType kType>
int DecoderDecode(void*, OSSL_CORE_BIO* in, int, OSSL_CALLBACK* data_cb, void* data_cbarg,
                  OSSL_PASSPHRASE_CALLBACK*, void*) {
  const std::string begin = std::string("-----BEGIN ") + kPemLabel + "-----";
  const std::string end = std::string("-----END ") + kPemLabel + "-----";
  std::string line;
  std::string pem;
  size_t budget = 64 * 1024;
  // Returning 1 without calling data_cb means "not mine": the next decoder runs.
  do {
    if (!ReadLine(in, &line, &budget)) return 1;
  } while (line.rfind("-----BEGIN ", 0) != 0);
  if (line != begin) return 1;
  pem = line + "\n";
  do {
    if (!ReadLine(in, &line, &budget)) {
      RaiseError(kBadKeyPem, "keyless: key PEM has no END line");
      return 0;
    }
    pem += line + "\n";
  } while (line != end);

  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  char* name = nullptr;
  char* header = nullptr;
  unsigned char* data = nullptr;
  long len = 0;
  const bool read = bio != nullptr && PEM_read_bio(bio, &name, &header, &data, &len) == 1;
  BIO_free(bio);
  KeylessKey* key = read ? ParseBody(data, len) : nullptr;
  OPENSSL_free(name);
  OPENSSL_free(header);
  OPENSSL_free(data);
  if (key == nullptr) {
    if (!read) RaiseError(kBadKeyPem, "keyless: key PEM is not valid base64");
    return 0;
  }
  if (key->type != kType) {  // the decoder for the other key type takes it
    KeyUnref(key);
    return 1;
  }

  int object_type = OSSL_OBJECT_PKEY;
  OSSL_PARAM params[4];
  params[0] = OSSL_PARAM_construct_int(OSSL_OBJECT_PARAM_TYPE, &object_type);
  params[1] = OSSL_PARAM_construct_utf8_string(OSSL_OBJECT_PARAM_DATA_TYPE,
                                               const_cast<char*>(KeyTypeName(kType)), 0);
  params[2] = OSSL_PARAM_construct_octet_string(OSSL_OBJECT_PARAM_REFERENCE, &key, sizeof(key));
  params[3] = OSSL_PARAM_construct_end();
  const int ok = data_cb(params, data_cbarg);
  KeyUnref(key);  // nullptr when the keymgmt's load() took it
  return ok;
}

// ---- keymgmt ----------------------------------------------------------------------

template <KeyType kType>
void* KmNew(void*) { return new KeylessKey(kType); }

void KmFree(void* keydata) { KeyUnref(static_cast<KeylessKey*>(keydata)); }

void* KmLoad(const void* reference, size_t size) {
  if (reference == nullptr || size != sizeof(KeylessKey*)) return nullptr;
  KeylessKey** slot = static_cast<KeylessKey**>(const_cast<void*>(reference));
  KeylessKey* key = *slot;
  *slot = nullptr;  // ownership moves to the EVP_PKEY
  return key;
}

int KmHas(const void* keydata, int selection) {
  const KeylessKey* key = static_cast<const KeylessKey*>(keydata);
  if (key == nullptr || key->pub == nullptr) return 0;
  // The private half exists (remotely) only for keys loaded from a reference PEM.
  if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0 && !key->HasRemote()) return 0;
  return 1;
}

int KmGetParams(void* keydata, OSSL_PARAM params[]) {
  const KeylessKey* key = static_cast<const KeylessKey*>(keydata);
  if (key == nullptr || key->pub == nullptr) return 0;
  OSSL_PARAM* bridge = OSSL_PARAM_locate(params, kBridgeIdParam);
  if (bridge != nullptr && (!key->HasRemote() || OSSL_PARAM_set_utf8_string(bridge, key->bridge_id.c_str()) != 1)) {
    return 0;
  }
  // bits, security-bits, max-size, default-digest, group, encoded-pub-key, n, e ...
  return EVP_PKEY_get_params(key->pub, params);
}

// The default provider's list for the type (static data of that provider, so it
// outlives the fetched method).
template <KeyType kType>
const OSSL_PARAM* KmGettableParams(void*) {
  EVP_KEYMGMT* km = EVP_KEYMGMT_fetch(LibCtx(), KeyTypeName(kType), kNotThisProvider);
  const OSSL_PARAM* params = km != nullptr ? EVP_KEYMGMT_gettable_params(km) : nullptr;
  EVP_KEYMGMT_free(km);
  return params;
}

int KmMatch(const void* keydata1, const void* keydata2, int selection) {
  const KeylessKey* a = static_cast<const KeylessKey*>(keydata1);
  const KeylessKey* b = static_cast<const KeylessKey*>(keydata2);
  if (a == nullptr || b == nullptr || a->pub == nullptr || b->pub == nullptr) return 0;
  // A keyless key's identity is its public key: compare that for any key selection.
  if ((selection & OSSL_KEYMGMT_SELECT_KEYPAIR) != 0) return EVP_PKEY_eq(a->pub, b->pub) == 1;
  if ((selection & OSSL_KEYMGMT_SELECT_ALL_PARAMETERS) != 0) {
    return EVP_PKEY_parameters_eq(a->pub, b->pub) == 1;
  }
  return 1;
}

// Import public material only (used when libcrypto compares a certificate's key
// with ours, or copies parameters). Any private part in `params` is ignored.
template <KeyType kType>
int KmImport(void* keydata, int selection, const OSSL_PARAM params[]) {
  KeylessKey* key = static_cast<KeylessKey*>(keydata);
  if (key == nullptr || key->pub != nullptr) return 0;
  const int what = (selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) != 0 ? EVP_PKEY_PUBLIC_KEY
                                                                     : EVP_PKEY_KEY_PARAMETERS;
  EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_from_name(LibCtx(), KeyTypeName(kType), kNotThisProvider);
  EVP_PKEY* pub = nullptr;
  const bool ok = ctx != nullptr && EVP_PKEY_fromdata_init(ctx) == 1 &&
                  EVP_PKEY_fromdata(ctx, &pub, what, const_cast<OSSL_PARAM*>(params)) == 1;
  EVP_PKEY_CTX_free(ctx);
  if (!ok) return 0;
  key->pub = pub;
  return 1;
}

// Never exports a private part: the other provider would need it and it is not
// here. Public key and parameters are exported (for encoders, parameter copies).
int KmExport(void* keydata, int selection, OSSL_CALLBACK* cb, void* cbarg) {
  const KeylessKey* key = static_cast<const KeylessKey*>(keydata);
  if (key == nullptr || key->pub == nullptr) return 0;
  if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0) return 0;
  const int what = (selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) != 0 ? EVP_PKEY_PUBLIC_KEY
                                                                     : EVP_PKEY_KEY_PARAMETERS;
  OSSL_PARAM* params = nullptr;
  if (EVP_PKEY_todata(key->pub, what, &params) != 1) return 0;
  const int ok = cb(params, cbarg);
  OSSL_PARAM_free(params);
  return ok;
}

const OSSL_PARAM kEcTypes[] = {
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, nullptr, 0),
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_ENCODING, nullptr, 0),
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT, nullptr, 0),
    OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, nullptr, 0),
    OSSL_PARAM_END,
};
const OSSL_PARAM kRsaTypes[] = {
    OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, nullptr, 0),
    OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, nullptr, 0),
    OSSL_PARAM_END,
};
const OSSL_PARAM kEd25519Types[] = {
    OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, nullptr, 0),
    OSSL_PARAM_END,
};

template <KeyType kType>
const OSSL_PARAM* KmTypes(int selection) {
  if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0) return nullptr;
  switch (kType) {
    case KeyType::kEc: return kEcTypes;
    case KeyType::kRsa: return kRsaTypes;
    case KeyType::kEd25519: return kEd25519Types;
  }
  return nullptr;
}

// The signature algorithm (ours, signature.cc) that libcrypto uses with this key type.
template <KeyType kType>
const char* KmQueryOperationName(int operation_id) {
  if (operation_id != OSSL_OP_SIGNATURE) return nullptr;
  switch (kType) {
    case KeyType::kEc: return "ECDSA";
    case KeyType::kRsa: return "RSA";
    case KeyType::kEd25519: return "ED25519";
  }
  return nullptr;
}

void* KmDup(const void* keydata, int selection) {
  const KeylessKey* from = static_cast<const KeylessKey*>(keydata);
  if (from == nullptr || from->pub == nullptr) return nullptr;
  KeylessKey* key = new KeylessKey(from->type);
  EVP_PKEY_up_ref(from->pub);
  key->pub = from->pub;
  if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0) {
    key->bridge_id = from->bridge_id;
    key->key_name = from->key_name;
  }
  return key;
}

#define FN(id, fn) {id, reinterpret_cast<void (*)(void)>(fn)}

}  // namespace

#define KEYMGMT_FUNCTIONS(T)                                               \
  {                                                                        \
    FN(OSSL_FUNC_KEYMGMT_NEW, KmNew<T>),                                   \
    FN(OSSL_FUNC_KEYMGMT_FREE, KmFree),                                    \
    FN(OSSL_FUNC_KEYMGMT_LOAD, KmLoad),                                    \
    FN(OSSL_FUNC_KEYMGMT_HAS, KmHas),                                      \
    FN(OSSL_FUNC_KEYMGMT_GET_PARAMS, KmGetParams),                         \
    FN(OSSL_FUNC_KEYMGMT_GETTABLE_PARAMS, KmGettableParams<T>),            \
    FN(OSSL_FUNC_KEYMGMT_MATCH, KmMatch),                                  \
    FN(OSSL_FUNC_KEYMGMT_IMPORT, KmImport<T>),                             \
    FN(OSSL_FUNC_KEYMGMT_IMPORT_TYPES, KmTypes<T>),                        \
    FN(OSSL_FUNC_KEYMGMT_EXPORT, KmExport),                                \
    FN(OSSL_FUNC_KEYMGMT_EXPORT_TYPES, KmTypes<T>),                        \
    FN(OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME, KmQueryOperationName<T>),   \
    FN(OSSL_FUNC_KEYMGMT_DUP, KmDup),                                      \
    {0, nullptr},                                                          \
  }

#define DECODER_FUNCTIONS(T)                                               \
  {                                                                        \
    FN(OSSL_FUNC_DECODER_NEWCTX, DecoderNewCtx<T>),                        \
    FN(OSSL_FUNC_DECODER_FREECTX, DecoderFreeCtx),                         \
    FN(OSSL_FUNC_DECODER_DOES_SELECTION, DecoderDoesSelection),            \
    FN(OSSL_FUNC_DECODER_DECODE, DecoderDecode<T>),                        \
    {0, nullptr},                                                          \
  }

const OSSL_DISPATCH kEcKeymgmtFunctions[] = KEYMGMT_FUNCTIONS(KeyType::kEc);
const OSSL_DISPATCH kRsaKeymgmtFunctions[] = KEYMGMT_FUNCTIONS(KeyType::kRsa);
const OSSL_DISPATCH kEcDecoderFunctions[] = DECODER_FUNCTIONS(KeyType::kEc);
const OSSL_DISPATCH kRsaDecoderFunctions[] = DECODER_FUNCTIONS(KeyType::kRsa);
const OSSL_DISPATCH kEd25519KeymgmtFunctions[] = KEYMGMT_FUNCTIONS(KeyType::kEd25519);
const OSSL_DISPATCH kEd25519DecoderFunctions[] = DECODER_FUNCTIONS(KeyType::kEd25519);

}  // namespace keyless
