// A keyless key: the public half (an ordinary EVP_PKEY from the default provider)
// plus the name of the remote key and of the bridge that signs with it.
#ifndef HSMGW_KEYLESS_KEYLESS_KEY_H_
#define HSMGW_KEYLESS_KEYLESS_KEY_H_

#include <openssl/evp.h>

#include <atomic>
#include <string>

namespace keyless {

enum class KeyType { kEc, kRsa, kEd25519 };

struct KeylessKey {
  explicit KeylessKey(KeyType t) : type(t) {}
  ~KeylessKey() { EVP_PKEY_free(pub); }

  std::atomic<int> refs{1};
  const KeyType type;
  EVP_PKEY* pub = nullptr;  // owned; public only
  std::string bridge_id;    // empty: public-only key (imported for comparison)
  std::string key_name;

  bool HasRemote() const { return !bridge_id.empty(); }
};

inline KeylessKey* KeyRef(KeylessKey* key) {
  key->refs.fetch_add(1);
  return key;
}

inline void KeyUnref(KeylessKey* key) {
  if (key != nullptr && key->refs.fetch_sub(1) == 1) delete key;
}

// OpenSSL's key type names (the default provider's keymgmt algorithms).
inline const char* KeyTypeName(KeyType type) {
  switch (type) {
    case KeyType::kEc: return "EC";
    case KeyType::kRsa: return "RSA";
    case KeyType::kEd25519: return "ED25519";
  }
  return "";
}

}  // namespace keyless

#endif  // HSMGW_KEYLESS_KEYLESS_KEY_H_
