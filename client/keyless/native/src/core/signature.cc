// Signature operations for keyless keys, and an RSA "cipher" that refuses to decrypt.
//
// ECDSA and RSA: OpenSSL hands us the digest name, padding and PSS parameters; we hash
// (for the DigestSign path), map the combination to a SignatureAlgorithm number and ask
// the remote signer for a signature over the digest. Ed25519 is pure EdDSA: one-shot
// DigestSign with no digest, and the whole message goes to the remote signer.
// Anything that does not map to one of the numbers is refused.
#include <openssl/core_names.h>
#include <openssl/params.h>
#include <openssl/rsa.h>

#include <cstring>
#include <string>
#include <vector>

#include "algorithms.h"
#include "keyless_key.h"
#include "provider.h"
#include "remote_signature.h"

namespace keyless {
namespace {

struct SigCtx {
  KeylessKey* key = nullptr;
  EVP_MD* md = nullptr;
  EVP_MD_CTX* mdctx = nullptr;  // DigestSign path only
  int pad = RSA_PKCS1_PADDING;
  int saltlen = RSA_PSS_SALTLEN_DIGEST;
  std::string mgf1;  // empty: same as the digest
};

void* NewCtx(void*, const char*) { return new SigCtx(); }

void FreeCtx(void* vctx) {
  SigCtx* ctx = static_cast<SigCtx*>(vctx);
  KeyUnref(ctx->key);
  EVP_MD_free(ctx->md);
  EVP_MD_CTX_free(ctx->mdctx);
  delete ctx;
}

void* DupCtx(void* vctx) {
  const SigCtx* from = static_cast<const SigCtx*>(vctx);
  SigCtx* ctx = new SigCtx(*from);
  ctx->key = nullptr;
  ctx->md = nullptr;
  ctx->mdctx = nullptr;
  if (from->key != nullptr) ctx->key = KeyRef(from->key);
  if (from->md != nullptr && EVP_MD_up_ref(from->md) == 1) ctx->md = from->md;
  if (from->mdctx != nullptr) {
    ctx->mdctx = EVP_MD_CTX_new();
    if (ctx->mdctx == nullptr || EVP_MD_CTX_copy_ex(ctx->mdctx, from->mdctx) != 1) {
      FreeCtx(ctx);
      return nullptr;
    }
  }
  return ctx;
}

int MdNid(const std::string& name) {
  EVP_MD* md = EVP_MD_fetch(LibCtx(), name.c_str(), nullptr);
  const int nid = md != nullptr ? EVP_MD_get_type(md) : NID_undef;
  EVP_MD_free(md);
  return nid;
}

bool SetDigest(SigCtx* ctx, const char* name) {
  EVP_MD* md = EVP_MD_fetch(LibCtx(), name, nullptr);
  const int nid = md != nullptr ? EVP_MD_get_type(md) : NID_undef;
  if (HashByNid(nid) == nullptr) {
    EVP_MD_free(md);
    RaiseError(kUnsupportedSignature, "keyless: digest %s is not supported (SHA-256/384/512 only)", name);
    return false;
  }
  EVP_MD_free(ctx->md);
  ctx->md = md;
  return true;
}

bool SetPadding(SigCtx* ctx, const OSSL_PARAM* p) {
  if (p->data_type == OSSL_PARAM_UTF8_STRING) {
    const char* s = nullptr;
    if (OSSL_PARAM_get_utf8_string_ptr(p, &s) != 1) return false;
    if (std::strcmp(s, OSSL_PKEY_RSA_PAD_MODE_PKCSV15) == 0) ctx->pad = RSA_PKCS1_PADDING;
    else if (std::strcmp(s, OSSL_PKEY_RSA_PAD_MODE_PSS) == 0) ctx->pad = RSA_PKCS1_PSS_PADDING;
    else ctx->pad = -1;  // raw, X9.31, OAEP ...: refused at sign time
    return true;
  }
  return OSSL_PARAM_get_int(p, &ctx->pad) == 1;
}

bool SetSaltLength(SigCtx* ctx, const OSSL_PARAM* p) {
  if (p->data_type == OSSL_PARAM_UTF8_STRING) {
    const char* s = nullptr;
    if (OSSL_PARAM_get_utf8_string_ptr(p, &s) != 1) return false;
    if (std::strcmp(s, OSSL_PKEY_RSA_PSS_SALT_LEN_DIGEST) == 0) ctx->saltlen = RSA_PSS_SALTLEN_DIGEST;
    else if (std::strcmp(s, OSSL_PKEY_RSA_PSS_SALT_LEN_MAX) == 0) ctx->saltlen = RSA_PSS_SALTLEN_MAX;
    else if (std::strcmp(s, OSSL_PKEY_RSA_PSS_SALT_LEN_AUTO) == 0) ctx->saltlen = RSA_PSS_SALTLEN_AUTO;
    else ctx->saltlen = std::atoi(s) > 0 ? std::atoi(s) : -100;  // -100: refused at sign time
    return true;
  }
  return OSSL_PARAM_get_int(p, &ctx->saltlen) == 1;
}

int SetCtxParams(void* vctx, const OSSL_PARAM params[]) {
  SigCtx* ctx = static_cast<SigCtx*>(vctx);
  if (params == nullptr) return 1;
  const OSSL_PARAM* p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_DIGEST);
  const char* name = nullptr;
  if (p != nullptr && (OSSL_PARAM_get_utf8_string_ptr(p, &name) != 1 || !SetDigest(ctx, name))) return 0;
  p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_PAD_MODE);
  if (p != nullptr && !SetPadding(ctx, p)) return 0;
  p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_PSS_SALTLEN);
  if (p != nullptr && !SetSaltLength(ctx, p)) return 0;
  p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_MGF1_DIGEST);
  if (p != nullptr) {
    if (OSSL_PARAM_get_utf8_string_ptr(p, &name) != 1) return 0;
    ctx->mgf1 = name;
  }
  return 1;
}

const OSSL_PARAM* SettableCtxParams(void*, void*) {
  static const OSSL_PARAM kSettable[] = {
      OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, nullptr, 0),
      OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PAD_MODE, nullptr, 0),
      OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PSS_SALTLEN, nullptr, 0),
      OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_DIGEST, nullptr, 0),
      OSSL_PARAM_END,
  };
  return kSettable;
}

int SignInit(void* vctx, void* provkey, const OSSL_PARAM params[]) {
  SigCtx* ctx = static_cast<SigCtx*>(vctx);
  KeylessKey* key = static_cast<KeylessKey*>(provkey);
  if (key == nullptr || !key->HasRemote()) {
    RaiseError(kNoRemoteKey, "keyless: this key holds only a public key");
    return 0;
  }
  KeyUnref(ctx->key);
  ctx->key = KeyRef(key);
  return SetCtxParams(ctx, params);
}

int DigestSignInit(void* vctx, const char* mdname, void* provkey, const OSSL_PARAM params[]) {
  SigCtx* ctx = static_cast<SigCtx*>(vctx);
  if (!SignInit(vctx, provkey, params)) return 0;
  if (!SetDigest(ctx, mdname != nullptr && mdname[0] != '\0' ? mdname : "SHA256")) return 0;
  if (ctx->mdctx == nullptr) ctx->mdctx = EVP_MD_CTX_new();
  return ctx->mdctx != nullptr && EVP_DigestInit_ex2(ctx->mdctx, ctx->md, nullptr) == 1;
}

int DigestSignUpdate(void* vctx, const unsigned char* data, size_t len) {
  SigCtx* ctx = static_cast<SigCtx*>(vctx);
  return ctx->mdctx != nullptr && EVP_DigestUpdate(ctx->mdctx, data, len) == 1;
}

// Maps the context to a SignatureAlgorithm number; 0 with `why` set if unsupported.
int MapAlgorithm(const SigCtx* ctx, size_t digest_len, std::string* why) {
  if (ctx->md == nullptr) {
    *why = "no digest set (raw signatures are not supported)";
    return 0;
  }
  const int nid = EVP_MD_get_type(ctx->md);
  const size_t md_len = static_cast<size_t>(EVP_MD_get_size(ctx->md));
  if (digest_len != md_len) {
    *why = "input length does not match the digest";
    return 0;
  }
  const HashAlgorithms* hash = HashByNid(nid);
  if (hash == nullptr) {
    *why = "the digest must be SHA-256, SHA-384 or SHA-512";
    return 0;
  }
  if (ctx->key->type == KeyType::kEc) return hash->ecdsa;
  if (ctx->pad == RSA_PKCS1_PADDING) return hash->rsa_pkcs1;
  if (ctx->pad != RSA_PKCS1_PSS_PADDING) {
    *why = "RSA padding must be PKCS#1 v1.5 or PSS (no raw RSA)";
    return 0;
  }
  if (!ctx->mgf1.empty() && MdNid(ctx->mgf1) != nid) {
    *why = "PSS MGF1 digest must equal the signature digest";
    return 0;
  }
  if (ctx->saltlen != RSA_PSS_SALTLEN_DIGEST && ctx->saltlen != static_cast<int>(md_len)) {
    *why = "PSS salt length must equal the digest length";
    return 0;
  }
  return hash->rsa_pss;
}

// Asks the remote signer for `algorithm` over `input` (a digest, or the message for
// Ed25519) and checks the answer's shape before OpenSSL uses it.
int RemoteSignature(SigCtx* ctx, int algorithm, unsigned char* sig, size_t* siglen, size_t sigsize,
                    const unsigned char* input, size_t input_len) {
  const size_t max = static_cast<size_t>(EVP_PKEY_get_size(ctx->key->pub));
  std::vector<unsigned char> out;
  if (!RemoteSignature(*ctx->key, algorithm, input, input_len, &out)) return 0;
  const KeyType type = ctx->key->type;
  if (type == KeyType::kRsa && !out.empty() && out.size() < max) {
    out.insert(out.begin(), max - out.size(), 0);  // I2OSP: left-pad to the modulus size
  }
  // RSA and Ed25519 signatures have one size; ECDSA's is DER, at most `max`.
  const bool well_formed = type == KeyType::kEc ? !out.empty() && out.size() <= max && out[0] == 0x30 : out.size() == max;
  if (!well_formed || out.size() > sigsize) {
    RecordRefusal(*ctx->key, kBadSignatureLength);
    RaiseError(kBadSignatureLength, "keyless: signer returned %zu bytes for key '%s' (expected %s%zu)",
               out.size(), ctx->key->key_name.c_str(),
               type == KeyType::kEc ? "a DER ECDSA signature of at most " : "", max);
    return 0;
  }
  std::memcpy(sig, out.data(), out.size());
  *siglen = out.size();
  return 1;
}

int SignDigest(SigCtx* ctx, unsigned char* sig, size_t* siglen, size_t sigsize,
               const unsigned char* digest, size_t digest_len) {
  if (ctx->key == nullptr) return 0;
  if (sig == nullptr) {
    *siglen = static_cast<size_t>(EVP_PKEY_get_size(ctx->key->pub));
    return 1;
  }
  std::string why;
  const int algorithm = MapAlgorithm(ctx, digest_len, &why);
  if (algorithm == 0) {
    RecordRefusal(*ctx->key, kUnsupportedSignature);
    RaiseError(kUnsupportedSignature, "keyless: %s (key '%s')", why.c_str(), ctx->key->key_name.c_str());
    return 0;
  }
  return RemoteSignature(ctx, algorithm, sig, siglen, sigsize, digest, digest_len);
}

int Sign(void* vctx, unsigned char* sig, size_t* siglen, size_t sigsize,
         const unsigned char* tbs, size_t tbslen) {
  return SignDigest(static_cast<SigCtx*>(vctx), sig, siglen, sigsize, tbs, tbslen);
}

int DigestSignFinal(void* vctx, unsigned char* sig, size_t* siglen, size_t sigsize) {
  SigCtx* ctx = static_cast<SigCtx*>(vctx);
  if (ctx->mdctx == nullptr) return 0;
  if (sig == nullptr) return SignDigest(ctx, nullptr, siglen, 0, nullptr, 0);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_len = 0;
  if (EVP_DigestFinal_ex(ctx->mdctx, digest, &digest_len) != 1) return 0;
  return SignDigest(ctx, sig, siglen, sigsize, digest, digest_len);
}

// ---- Ed25519: one-shot DigestSign over the whole message -------------------------------

int Ed25519DigestSignInit(void* vctx, const char* mdname, void* provkey, const OSSL_PARAM params[]) {
  if (mdname != nullptr && mdname[0] != '\0') {
    RaiseError(kUnsupportedSignature, "keyless: Ed25519 signs the message itself, not a %s digest", mdname);
    return 0;
  }
  return SignInit(vctx, provkey, params);
}

int Ed25519DigestSign(void* vctx, unsigned char* sig, size_t* siglen, size_t sigsize,
                      const unsigned char* tbs, size_t tbslen) {
  SigCtx* ctx = static_cast<SigCtx*>(vctx);
  if (ctx->key == nullptr) return 0;
  if (sig == nullptr) {
    *siglen = static_cast<size_t>(EVP_PKEY_get_size(ctx->key->pub));
    return 1;
  }
  return RemoteSignature(ctx, kEd25519, sig, siglen, sigsize, tbs, tbslen);
}

// ---- RSA decryption: refused with a readable reason -------------------------------

int g_stateless;
void* CipherNewCtx(void*) { return &g_stateless; }  // must not be NULL
void CipherFreeCtx(void*) {}

int CipherDecryptInit(void*, void*, const OSSL_PARAM[]) {
  RaiseError(kDecryptUnsupported,
             "keyless: RSA key exchange (TLS_RSA_* cipher suites) needs the private key to "
             "decrypt; a keyless key only signs: use ECDHE cipher suites or TLS 1.3");
  return 0;
}

int CipherDecrypt(void* ctx, unsigned char*, size_t*, size_t, const unsigned char*, size_t) {
  return CipherDecryptInit(ctx, nullptr, nullptr);
}

#define FN(id, fn) {id, reinterpret_cast<void (*)(void)>(fn)}

}  // namespace

#define SIGNATURE_FUNCTIONS                                              \
  {                                                                      \
    FN(OSSL_FUNC_SIGNATURE_NEWCTX, NewCtx),                              \
    FN(OSSL_FUNC_SIGNATURE_FREECTX, FreeCtx),                            \
    FN(OSSL_FUNC_SIGNATURE_DUPCTX, DupCtx),                              \
    FN(OSSL_FUNC_SIGNATURE_SIGN_INIT, SignInit),                         \
    FN(OSSL_FUNC_SIGNATURE_SIGN, Sign),                                  \
    FN(OSSL_FUNC_SIGNATURE_DIGEST_SIGN_INIT, DigestSignInit),            \
    FN(OSSL_FUNC_SIGNATURE_DIGEST_SIGN_UPDATE, DigestSignUpdate),        \
    FN(OSSL_FUNC_SIGNATURE_DIGEST_SIGN_FINAL, DigestSignFinal),          \
    FN(OSSL_FUNC_SIGNATURE_SET_CTX_PARAMS, SetCtxParams),                \
    FN(OSSL_FUNC_SIGNATURE_SETTABLE_CTX_PARAMS, SettableCtxParams),      \
    {0, nullptr},                                                        \
  }

const OSSL_DISPATCH kEcdsaSignatureFunctions[] = SIGNATURE_FUNCTIONS;
const OSSL_DISPATCH kRsaSignatureFunctions[] = SIGNATURE_FUNCTIONS;

const OSSL_DISPATCH kEd25519SignatureFunctions[] = {
    FN(OSSL_FUNC_SIGNATURE_NEWCTX, NewCtx),
    FN(OSSL_FUNC_SIGNATURE_FREECTX, FreeCtx),
    FN(OSSL_FUNC_SIGNATURE_DUPCTX, DupCtx),
    FN(OSSL_FUNC_SIGNATURE_DIGEST_SIGN_INIT, Ed25519DigestSignInit),
    FN(OSSL_FUNC_SIGNATURE_DIGEST_SIGN, Ed25519DigestSign),
    {0, nullptr},
};

const OSSL_DISPATCH kRsaAsymCipherFunctions[] = {
    FN(OSSL_FUNC_ASYM_CIPHER_NEWCTX, CipherNewCtx),
    FN(OSSL_FUNC_ASYM_CIPHER_FREECTX, CipherFreeCtx),
    FN(OSSL_FUNC_ASYM_CIPHER_DECRYPT_INIT, CipherDecryptInit),
    FN(OSSL_FUNC_ASYM_CIPHER_DECRYPT, CipherDecrypt),
    {0, nullptr},
};

}  // namespace keyless
