// The standalone provider's client of `hsm-gateway agent`: one Unix-socket connection per
// signature in flight, kept for reuse per thread and per process. Nothing is opened before
// the first signature (nginx loads keys in its master and forks its workers afterwards), and
// a forked child never uses its parent's connections.
#ifndef HSMGW_KEYLESS_AGENT_CLIENT_H_
#define HSMGW_KEYLESS_AGENT_CLIENT_H_

#include <cstddef>
#include <string>
#include <vector>

namespace keyless::agent {

struct Settings {
  std::string socket_path = "/run/hsm-gateway/agent.sock";
  int timeout_ms = 2000;
};

// Asks the agent for a signature. Inside an OpenSSL ASYNC job (HAProxy's ssl-mode-async) the
// job pauses with the connection as its wait fd instead of blocking the thread. On failure an
// OpenSSL error is raised (timeout, agent unreachable, the gateway's refusal) and false returned.
bool Sign(const Settings& settings, const std::string& key_name, int algorithm, const unsigned char* input,
          size_t input_len, std::vector<unsigned char>* signature);

}  // namespace keyless::agent

#endif  // HSMGW_KEYLESS_AGENT_CLIENT_H_
