// Provider entry point: dispatch tables, error strings and core upcalls.
#include "provider.h"

#include <openssl/core_names.h>
#include <openssl/params.h>

#include <cstdarg>

namespace keyless {
namespace {

// Core upcalls, captured once in ProviderInit. The provider is loaded once, into
// the default library context, so plain globals are enough.
const OSSL_CORE_HANDLE* g_handle = nullptr;
OSSL_LIB_CTX* g_libctx = nullptr;
OSSL_FUNC_core_new_error_fn* g_new_error = nullptr;
OSSL_FUNC_core_set_error_debug_fn* g_set_error_debug = nullptr;
OSSL_FUNC_core_vset_error_fn* g_vset_error = nullptr;
OSSL_FUNC_BIO_read_ex_fn* g_bio_read_ex = nullptr;
OSSL_FUNC_core_get_params_fn* g_get_params = nullptr;

// Reason strings. They read well both as Node's `err.reason` and, transformed,
// as `err.code` (ERR_SSL_KEYLESS_SIGN_TIMED_OUT ...).
const OSSL_ITEM kReasonStrings[] = {
#define HSMGW_REASON_ITEM(name, code, text, label) {name, const_cast<char*>(text)},
    HSMGW_KEYLESS_REASONS(HSMGW_REASON_ITEM)
#undef HSMGW_REASON_ITEM
    {0, nullptr},
};

const OSSL_ALGORITHM kKeymgmts[] = {
    {"EC", kPropertyDefinition, kEcKeymgmtFunctions, "keyless EC key"},
    {"RSA", kPropertyDefinition, kRsaKeymgmtFunctions, "keyless RSA key"},
    {"ED25519", kPropertyDefinition, kEd25519KeymgmtFunctions, "keyless Ed25519 key"},
    {nullptr, nullptr, nullptr, nullptr},
};
const OSSL_ALGORITHM kDecoders[] = {
    {"EC", "provider=hsmgw-keyless,input=pem", kEcDecoderFunctions, "keyless EC key PEM"},
    {"RSA", "provider=hsmgw-keyless,input=pem", kRsaDecoderFunctions, "keyless RSA key PEM"},
    {"ED25519", "provider=hsmgw-keyless,input=pem", kEd25519DecoderFunctions, "keyless Ed25519 key PEM"},
    {nullptr, nullptr, nullptr, nullptr},
};
const OSSL_ALGORITHM kSignatures[] = {
    {"ECDSA", kPropertyDefinition, kEcdsaSignatureFunctions, "remote ECDSA"},
    {"RSA", kPropertyDefinition, kRsaSignatureFunctions, "remote RSA PKCS#1/PSS"},
    {"ED25519", kPropertyDefinition, kEd25519SignatureFunctions, "remote Ed25519 (pure, one-shot)"},
    {nullptr, nullptr, nullptr, nullptr},
};
const OSSL_ALGORITHM kAsymCiphers[] = {
    {"RSA", kPropertyDefinition, kRsaAsymCipherFunctions, "refuses RSA decryption"},
    {nullptr, nullptr, nullptr, nullptr},
};

const OSSL_ALGORITHM* QueryOperation(void*, int operation_id, int* no_cache) {
  *no_cache = 0;
  switch (operation_id) {
    case OSSL_OP_KEYMGMT: return kKeymgmts;
    case OSSL_OP_DECODER: return kDecoders;
    case OSSL_OP_SIGNATURE: return kSignatures;
    case OSSL_OP_ASYM_CIPHER: return kAsymCiphers;
    default: return nullptr;
  }
}

const OSSL_ITEM* GetReasonStrings(void*) { return kReasonStrings; }

// What `openssl list -providers` shows.
const OSSL_PARAM* GettableParams(void*) {
  static const OSSL_PARAM kGettable[] = {
      OSSL_PARAM_utf8_ptr(OSSL_PROV_PARAM_NAME, nullptr, 0),
      OSSL_PARAM_int(OSSL_PROV_PARAM_STATUS, nullptr),
      OSSL_PARAM_END,
  };
  return kGettable;
}

int GetParams(void*, OSSL_PARAM params[]) {
  OSSL_PARAM* p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_NAME);
  if (p != nullptr && OSSL_PARAM_set_utf8_ptr(p, "hsm-gateway keyless provider (signatures by the remote HSM)") != 1) return 0;
  p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_STATUS);
  if (p != nullptr && OSSL_PARAM_set_int(p, 1) != 1) return 0;
  return 1;
}

const OSSL_DISPATCH kProviderFunctions[] = {
    {OSSL_FUNC_PROVIDER_QUERY_OPERATION, reinterpret_cast<void (*)(void)>(QueryOperation)},
    {OSSL_FUNC_PROVIDER_GET_REASON_STRINGS, reinterpret_cast<void (*)(void)>(GetReasonStrings)},
    {OSSL_FUNC_PROVIDER_GETTABLE_PARAMS, reinterpret_cast<void (*)(void)>(GettableParams)},
    {OSSL_FUNC_PROVIDER_GET_PARAMS, reinterpret_cast<void (*)(void)>(GetParams)},
    {0, nullptr},
};

}  // namespace

int ProviderInit(const OSSL_CORE_HANDLE* handle, const OSSL_DISPATCH* in,
                 const OSSL_DISPATCH** out, void** provctx) {
  OSSL_FUNC_core_get_libctx_fn* get_libctx = nullptr;
  for (; in->function_id != 0; in++) {
    switch (in->function_id) {
      case OSSL_FUNC_CORE_GET_LIBCTX: get_libctx = OSSL_FUNC_core_get_libctx(in); break;
      case OSSL_FUNC_CORE_NEW_ERROR: g_new_error = OSSL_FUNC_core_new_error(in); break;
      case OSSL_FUNC_CORE_SET_ERROR_DEBUG: g_set_error_debug = OSSL_FUNC_core_set_error_debug(in); break;
      case OSSL_FUNC_CORE_VSET_ERROR: g_vset_error = OSSL_FUNC_core_vset_error(in); break;
      case OSSL_FUNC_BIO_READ_EX: g_bio_read_ex = OSSL_FUNC_BIO_read_ex(in); break;
      case OSSL_FUNC_CORE_GET_PARAMS: g_get_params = OSSL_FUNC_core_get_params(in); break;
      default: break;
    }
  }
  if (get_libctx == nullptr || g_new_error == nullptr || g_set_error_debug == nullptr ||
      g_vset_error == nullptr || g_bio_read_ex == nullptr) {
    return 0;
  }
  g_handle = handle;
  // A built-in provider lives in the same libcrypto as its core, so the core's
  // context handle is the OSSL_LIB_CTX itself (NULL: the default context).
  g_libctx = reinterpret_cast<OSSL_LIB_CTX*>(get_libctx(handle));
  static int provider_context;
  *out = kProviderFunctions;
  *provctx = &provider_context;
  return 1;
}

const OSSL_CORE_HANDLE* CoreHandle() { return g_handle; }
OSSL_FUNC_core_get_params_fn* CoreGetParams() { return g_get_params; }

void RaiseErrorAt(const char* file, int line, const char* func, Reason reason, const char* fmt, ...) {
  if (g_handle == nullptr) return;
  va_list args;
  va_start(args, fmt);
  g_new_error(g_handle);
  g_set_error_debug(g_handle, file, line, func);
  g_vset_error(g_handle, static_cast<uint32_t>(reason), fmt, args);
  va_end(args);
}

OSSL_LIB_CTX* LibCtx() { return g_libctx; }

bool ReadCoreBio(OSSL_CORE_BIO* bio, void* buf, size_t len, size_t* read) {
  return g_bio_read_ex(bio, buf, len, read) == 1;
}

}  // namespace keyless
