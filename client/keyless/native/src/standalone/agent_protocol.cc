#include "agent_protocol.h"

namespace keyless::agent {
namespace {

void PutU16(std::vector<unsigned char>* out, uint32_t v) {
  out->push_back(static_cast<unsigned char>(v >> 8));
  out->push_back(static_cast<unsigned char>(v));
}

void PutU32(std::vector<unsigned char>* out, uint32_t v) {
  PutU16(out, v >> 16);
  PutU16(out, v & 0xffff);
}

uint32_t GetU16(const unsigned char* p) { return (static_cast<uint32_t>(p[0]) << 8) | p[1]; }
uint32_t GetU32(const unsigned char* p) { return (GetU16(p) << 16) | GetU16(p + 2); }

}  // namespace

std::vector<unsigned char> EncodeSignRequest(uint32_t request_id, int algorithm, const std::string& key_name,
                                             const unsigned char* input, size_t input_len) {
  std::vector<unsigned char> frame;
  frame.reserve(4 + 13 + key_name.size() + input_len);
  PutU32(&frame, 0);  // length, set below
  frame.push_back(kVersion);
  frame.push_back(kTypeSign);
  PutU32(&frame, request_id);
  frame.push_back(static_cast<unsigned char>(algorithm));
  PutU16(&frame, static_cast<uint32_t>(key_name.size()));
  frame.insert(frame.end(), key_name.begin(), key_name.end());
  PutU32(&frame, static_cast<uint32_t>(input_len));
  frame.insert(frame.end(), input, input + input_len);
  const uint32_t body = static_cast<uint32_t>(frame.size() - 4);
  for (int i = 0; i < 4; i++) frame[i] = static_cast<unsigned char>(body >> (24 - 8 * i));
  return frame;
}

bool DecodeAnswer(const unsigned char* body, size_t len, Answer* answer) {
  if (len < 6 || body[0] != kVersion) return false;
  answer->request_id = GetU32(body + 2);
  if (body[1] == kTypeSignature) {
    if (len < 10) return false;
    const uint32_t n = GetU32(body + 6);
    if (len != 10 + static_cast<size_t>(n)) return false;
    answer->ok = true;
    answer->signature.assign(body + 10, body + 10 + n);
    return true;
  }
  if (body[1] == kTypeError) {
    if (len < 9) return false;
    const uint32_t n = GetU16(body + 7);
    if (len != 9 + static_cast<size_t>(n)) return false;
    answer->ok = false;
    answer->code = body[6];
    answer->message.assign(reinterpret_cast<const char*>(body + 9), n);
    return true;
  }
  return false;
}

}  // namespace keyless::agent
