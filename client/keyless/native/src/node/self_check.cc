#include "self_check.h"

#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <memory>

#include "provider.h"

namespace keyless {

bool MakeSelfCheckKey(EVP_PKEY** key, std::string* cert_pem, std::vector<unsigned char>* spki_der,
                      std::string* error) {
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> pkey(
      EVP_PKEY_Q_keygen(LibCtx(), kNotThisProvider, "EC", "P-256"), EVP_PKEY_free);
  std::unique_ptr<X509, decltype(&X509_free)> cert(X509_new_ex(LibCtx(), kNotThisProvider), X509_free);
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
  if (pkey == nullptr || cert == nullptr || bio == nullptr) {
    *error = "cannot create the self-check key";
    return false;
  }
  X509_NAME* name = X509_get_subject_name(cert.get());
  const bool built =
      X509_set_version(cert.get(), X509_VERSION_3) == 1 &&
      ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), 1) == 1 &&
      X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600) != nullptr &&
      X509_gmtime_adj(X509_getm_notAfter(cert.get()), 3600) != nullptr &&
      X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                 reinterpret_cast<const unsigned char*>("hsmgw keyless self-check"), -1, -1, 0) == 1 &&
      X509_set_issuer_name(cert.get(), name) == 1 && X509_set_pubkey(cert.get(), pkey.get()) == 1 &&
      X509_sign(cert.get(), pkey.get(), EVP_sha256()) > 0 && PEM_write_bio_X509(bio.get(), cert.get()) == 1;
  const int spki_len = i2d_PUBKEY(pkey.get(), nullptr);
  if (!built || spki_len <= 0) {
    *error = "cannot create the self-check certificate";
    return false;
  }
  char* pem = nullptr;
  const long pem_len = BIO_get_mem_data(bio.get(), &pem);
  cert_pem->assign(pem, static_cast<size_t>(pem_len));
  spki_der->resize(static_cast<size_t>(spki_len));
  unsigned char* out = spki_der->data();
  i2d_PUBKEY(pkey.get(), &out);
  *key = pkey.release();
  return true;
}

}  // namespace keyless
