// The throwaway key and certificate of the non-blocking mode's start-up self-check.
#ifndef HSMGW_KEYLESS_SELF_CHECK_H_
#define HSMGW_KEYLESS_SELF_CHECK_H_

#include <openssl/evp.h>

#include <string>
#include <vector>

namespace keyless {

// A fresh P-256 key (returned in *key, owned by the caller), a self-signed
// certificate for it (PEM) and its SubjectPublicKeyInfo (DER).
bool MakeSelfCheckKey(EVP_PKEY** key, std::string* cert_pem, std::vector<unsigned char>* spki_der,
                      std::string* error);

}  // namespace keyless

#endif  // HSMGW_KEYLESS_SELF_CHECK_H_
