// The Node front end of the provider: registered as a built-in inside Node's own OpenSSL
// (never a second libcrypto), with its signatures made through the process's bridges.
#include "node_provider.h"

#include <openssl/decoder.h>
#include <openssl/evp.h>
#include <openssl/provider.h>

#include <mutex>

#include "nonblocking.h"
#include "provider.h"
#include "remote_signature.h"
#include "remote_signer.h"

namespace keyless {

bool RemoteSignature(const KeylessKey& key, int algorithm, const unsigned char* input, size_t input_len,
                     std::vector<unsigned char>* signature) {
  // Inside an async handshake of a non-blocking bridge the job pauses; anywhere
  // else (other bridges, client connections, outside a handshake) it blocks.
  bool handled = false;
  const bool ok = NonBlockingSign(key, algorithm, input, input_len, signature, &handled);
  if (handled) return ok;
  if (BridgeIsNonBlocking(key.bridge_id)) CountBlockingSign();
  return RemoteSign(key.bridge_id, key.key_name, algorithm, input, input_len, signature);
}

void RecordRefusal(const KeylessKey& key, Reason reason) { RecordFailure(key.key_name, reason); }

bool RegisterProvider(std::string* error) {
  static std::once_flag once;
  static bool ok = false;
  static std::string failure;
  std::call_once(once, [] {
    // Fetching without a property query takes the first implementation in the
    // method store, in insertion order. Populate the store with the already loaded
    // providers' implementations first, so that ordinary keys, key generation and
    // verification keep resolving to them; ours are appended after and are used only
    // for keyless keys (whose keymgmt is ours).
    EVP_KEYMGMT_do_all_provided(nullptr, [](EVP_KEYMGMT*, void*) {}, nullptr);
    EVP_SIGNATURE_do_all_provided(nullptr, [](EVP_SIGNATURE*, void*) {}, nullptr);
    EVP_ASYM_CIPHER_do_all_provided(nullptr, [](EVP_ASYM_CIPHER*, void*) {}, nullptr);
    OSSL_DECODER_do_all_provided(nullptr, [](OSSL_DECODER*, void*) {}, nullptr);
    if (OSSL_PROVIDER_add_builtin(nullptr, kProviderName, ProviderInit) != 1) {
      failure = "OSSL_PROVIDER_add_builtin failed";
      return;
    }
    // try_load with retain_fallbacks=1: loading this provider must not stop the
    // default provider from being loaded implicitly. The provider stays loaded for
    // the life of the process (keys and SSL_CTXs may reference it at any time).
    if (OSSL_PROVIDER_try_load(nullptr, kProviderName, 1) == nullptr) {
      failure = "OSSL_PROVIDER_try_load failed";
      return;
    }
    ok = true;
  });
  if (!ok && error != nullptr) *error = failure;
  return ok;
}

}  // namespace keyless
