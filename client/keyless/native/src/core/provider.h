// The OpenSSL 3 provider that makes "keyless" keys usable by libssl: the core shared by
// its two front ends, the Node addon (registered inside Node's own OpenSSL, src/node) and
// the standalone module for nginx and HAProxy (src/standalone).
#ifndef HSMGW_KEYLESS_PROVIDER_H_
#define HSMGW_KEYLESS_PROVIDER_H_

#include <openssl/core.h>
#include <openssl/core_dispatch.h>
#include <openssl/types.h>

#include <string>

namespace keyless {

// Provider name; also the OpenSSL error "library" name shown in error strings.
inline constexpr char kProviderName[] = "hsmgw-keyless";
// Property definition of every algorithm this provider offers.
inline constexpr char kPropertyDefinition[] = "provider=hsmgw-keyless";
// Property query that selects anything but this provider (used to delegate the
// public half of a key, and digests, to the default provider).
inline constexpr char kNotThisProvider[] = "provider!=hsmgw-keyless";
// Key parameter (UTF-8 string) naming the bridge of a keyless key; read by the
// non-blocking mode to tell whether a connection's key may pause its handshake.
inline constexpr char kBridgeIdParam[] = "hsmgw-keyless-bridge-id";
// PEM label of a keyless key reference.
inline constexpr char kPemLabel[] = "HSM GATEWAY KEYLESS KEY";

// Every way a keyless key operation fails, listed once: the reason code of the provider's
// OpenSSL error library, its reason string (Node shows it as `err.reason`, and as `err.code`
// ERR_SSL_KEYLESS_...), and for a failed sign attempt the `reason` label of
// hsmgw_keyless_sign_failures_total ("" when it is not a sign attempt's outcome).
//   X(name, code, reason string, sign outcome label)
#define HSMGW_KEYLESS_REASONS(X)                                                              \
  X(kSignTimedOut, 100, "keyless sign timed out", "timeout")                                 \
  X(kSignerFailed, 101, "keyless remote signer failed", "signer_error")                      \
  X(kNoSigner, 102, "keyless signer unavailable", "no_signer")                               \
  X(kWorkerNotRunning, 103, "keyless signer worker not running", "worker_dead")              \
  X(kSignOnSignerThread, 104, "keyless sign on signer thread", "signer_thread")              \
  X(kUnsupportedSignature, 105, "keyless unsupported signature", "unsupported")              \
  X(kBadSignatureLength, 106, "keyless bad signature length", "bad_signature")               \
  X(kDecryptUnsupported, 107, "keyless key cannot decrypt", "")                              \
  X(kNoRemoteKey, 108, "keyless key has no remote signer", "")                               \
  X(kBadKeyPem, 109, "keyless invalid key pem", "")                                          \
  X(kSignCancelled, 110, "keyless sign cancelled", "cancelled")                              \
  X(kNonBlockingOnly, 111, "keyless self check key", "")

// A reason code; kOk (0) is a sign attempt that succeeded.
enum Reason : int {
  kOk = 0,
#define HSMGW_REASON_ENUM(name, code, text, label) name = code,
  HSMGW_KEYLESS_REASONS(HSMGW_REASON_ENUM)
#undef HSMGW_REASON_ENUM
};

// The metric label of a sign attempt's outcome: "ok", a label of the list, or "unknown".
inline const char* SignOutcomeLabel(int outcome) {
  if (outcome == kOk) return "ok";
#define HSMGW_REASON_LABEL(name, code, text, label) \
  if (outcome == name && (label)[0] != '\0') return label;
  HSMGW_KEYLESS_REASONS(HSMGW_REASON_LABEL)
#undef HSMGW_REASON_LABEL
  return "unknown";
}

// Pushes an error on the calling thread's OpenSSL error queue. `fmt` becomes the
// error's data text ("keyless: sign timed out after 2000 ms ..."). Use RaiseError().
void RaiseErrorAt(const char* file, int line, const char* func, Reason reason, const char* fmt, ...)
    __attribute__((format(printf, 5, 6)));
#define RaiseError(reason, ...) RaiseErrorAt(__FILE_NAME__, __LINE__, __func__, reason, __VA_ARGS__)

// The library context the provider was loaded into (Node's default context).
OSSL_LIB_CTX* LibCtx();

// Reads up to `len` bytes from a core BIO handed to a decoder.
bool ReadCoreBio(OSSL_CORE_BIO* bio, void* buf, size_t len, size_t* read);

// The provider's entry point (an OSSL_provider_init_fn) for both front ends: the Node
// addon registers it as a built-in, the standalone module exports it as OSSL_provider_init.
int ProviderInit(const OSSL_CORE_HANDLE* handle, const OSSL_DISPATCH* in, const OSSL_DISPATCH** out,
                 void** provctx);
// The core handle and its get_params upcall, captured by ProviderInit (the standalone front
// end reads its openssl.cnf settings through them).
const OSSL_CORE_HANDLE* CoreHandle();
OSSL_FUNC_core_get_params_fn* CoreGetParams();

// Algorithm implementations (keymgmt.cc, signature.cc).
extern const OSSL_DISPATCH kEcKeymgmtFunctions[];
extern const OSSL_DISPATCH kRsaKeymgmtFunctions[];
extern const OSSL_DISPATCH kEcDecoderFunctions[];
extern const OSSL_DISPATCH kRsaDecoderFunctions[];
extern const OSSL_DISPATCH kEcdsaSignatureFunctions[];
extern const OSSL_DISPATCH kRsaSignatureFunctions[];
extern const OSSL_DISPATCH kRsaAsymCipherFunctions[];
extern const OSSL_DISPATCH kEd25519KeymgmtFunctions[];
extern const OSSL_DISPATCH kEd25519DecoderFunctions[];
extern const OSSL_DISPATCH kEd25519SignatureFunctions[];

}  // namespace keyless

#endif  // HSMGW_KEYLESS_PROVIDER_H_
