// What the native code knows about each SignatureAlgorithm: which digest goes with which wire
// number. The numbers come from the generated signature_algorithm.h (from signer.proto); this
// table only pairs them with OpenSSL's digests.
#ifndef HSMGW_KEYLESS_ALGORITHMS_H_
#define HSMGW_KEYLESS_ALGORITHMS_H_

#include <openssl/obj_mac.h>

#include <cstddef>

#include "signature_algorithm.h"

namespace keyless {

// One hash and the three algorithms of the proto that sign its digest.
struct HashAlgorithms {
  int nid;             // OpenSSL NID of the digest
  const char* digest;  // its name for EVP_MD_fetch
  size_t length;       // digest length, bytes
  SignatureAlgorithm rsa_pkcs1;
  SignatureAlgorithm rsa_pss;
  SignatureAlgorithm ecdsa;
};

inline constexpr HashAlgorithms kHashAlgorithms[] = {
    {NID_sha256, "SHA256", 32, kRsaPkcs1Sha256, kRsaPssSha256, kEcdsaSha256},
    {NID_sha384, "SHA384", 48, kRsaPkcs1Sha384, kRsaPssSha384, kEcdsaSha384},
    {NID_sha512, "SHA512", 64, kRsaPkcs1Sha512, kRsaPssSha512, kEcdsaSha512},
};

// The row of a digest NID; nullptr for a digest no algorithm uses.
inline const HashAlgorithms* HashByNid(int nid) {
  for (const HashAlgorithms& h : kHashAlgorithms) {
    if (h.nid == nid) return &h;
  }
  return nullptr;
}

// The row of an algorithm that signs a digest; nullptr for Ed25519 and unknown numbers.
inline const HashAlgorithms* HashOf(int algorithm) {
  for (const HashAlgorithms& h : kHashAlgorithms) {
    if (h.rsa_pkcs1 == algorithm || h.rsa_pss == algorithm || h.ecdsa == algorithm) return &h;
  }
  return nullptr;
}

inline bool IsEcdsa(int algorithm) {
  const HashAlgorithms* h = HashOf(algorithm);
  return h != nullptr && h->ecdsa == algorithm;
}

}  // namespace keyless

#endif  // HSMGW_KEYLESS_ALGORITHMS_H_
