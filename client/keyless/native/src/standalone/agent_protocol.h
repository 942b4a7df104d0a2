// The keyless agent protocol, version 1 (docs/KEYLESS-AGENT.md): length-prefixed frames on a
// Unix socket between the standalone provider (in nginx or HAProxy) and `hsm-gateway agent`.
// Every integer is big-endian. A frame is a u32 body length followed by the body.
//
//   request   u8 version=1 | u8 type=1 (sign) | u32 request id | u8 algorithm
//             | u16 key name length | key name (UTF-8) | u32 input length | input
//   answer    u8 version=1 | u8 type=2 (signature) | u32 request id | u32 length | signature
//   error     u8 version=1 | u8 type=3 (error) | u32 request id | u8 gRPC status code
//             | u16 message length | message (UTF-8)
#ifndef HSMGW_KEYLESS_AGENT_PROTOCOL_H_
#define HSMGW_KEYLESS_AGENT_PROTOCOL_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace keyless::agent {

inline constexpr uint8_t kVersion = 1;
inline constexpr uint8_t kTypeSign = 1;
inline constexpr uint8_t kTypeSignature = 2;
inline constexpr uint8_t kTypeError = 3;
// Bodies larger than this are a protocol error (a message input is capped by the gateway anyway).
inline constexpr uint32_t kMaxBody = 70 * 1024;

// The frame of a sign request (length prefix included).
std::vector<unsigned char> EncodeSignRequest(uint32_t request_id, int algorithm, const std::string& key_name,
                                             const unsigned char* input, size_t input_len);

// A decoded answer body: a signature, or an error with its gRPC code and message.
struct Answer {
  uint32_t request_id = 0;
  bool ok = false;
  std::vector<unsigned char> signature;
  int code = 0;
  std::string message;
};
// False if the body is not a well-formed version 1 answer.
bool DecodeAnswer(const unsigned char* body, size_t len, Answer* answer);

}  // namespace keyless::agent

#endif  // HSMGW_KEYLESS_AGENT_PROTOCOL_H_
