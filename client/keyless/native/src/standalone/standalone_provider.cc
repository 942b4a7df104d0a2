// The standalone front end of the provider, for nginx, HAProxy and anything else that loads
// OpenSSL 3 providers from openssl.cnf: the same core as the Node addon, its signatures made
// by `hsm-gateway agent` over a Unix socket. Settings come from the provider's openssl.cnf
// section:
//
//   [hsmgw_sect]
//   module = /path/to/hsmgw-provider.so
//   activate = 1
//   agent_socket = /run/hsm-gateway/agent.sock   # default
//   sign_timeout_ms = 2000                       # default; 1 to 600000
#include <openssl/core_dispatch.h>
#include <openssl/params.h>

#include <cstdlib>
#include <string>

#include "agent_client.h"
#include "provider.h"
#include "remote_signature.h"

namespace keyless {
namespace {

agent::Settings g_settings;

// Reads the openssl.cnf settings once, at load time; malformed values keep the defaults.
void ReadSettings() {
  OSSL_FUNC_core_get_params_fn* get_params = CoreGetParams();
  if (get_params == nullptr) return;
  char* socket_path = nullptr;
  char* timeout = nullptr;
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_ptr("agent_socket", &socket_path, 0),
      OSSL_PARAM_construct_utf8_ptr("sign_timeout_ms", &timeout, 0),
      OSSL_PARAM_construct_end(),
  };
  if (get_params(CoreHandle(), params) != 1) return;
  if (socket_path != nullptr && socket_path[0] != '\0') g_settings.socket_path = socket_path;
  if (timeout != nullptr) {
    char* end = nullptr;
    const long ms = std::strtol(timeout, &end, 10);
    if (end != timeout && *end == '\0' && ms >= 1 && ms <= 600000) g_settings.timeout_ms = static_cast<int>(ms);
  }
}

}  // namespace

bool RemoteSignature(const KeylessKey& key, int algorithm, const unsigned char* input, size_t input_len,
                     std::vector<unsigned char>* signature) {
  return agent::Sign(g_settings, key.key_name, algorithm, input, input_len, signature);
}

// The agent counts what it signs and refuses; nothing to record in the server process.
void RecordRefusal(const KeylessKey&, Reason) {}

}  // namespace keyless

extern "C" __attribute__((visibility("default"))) int OSSL_provider_init(const OSSL_CORE_HANDLE* handle,
                                                                         const OSSL_DISPATCH* in,
                                                                         const OSSL_DISPATCH** out, void** provctx) {
  if (keyless::ProviderInit(handle, in, out, provctx) != 1) return 0;
  keyless::ReadSettings();
  return 1;
}
