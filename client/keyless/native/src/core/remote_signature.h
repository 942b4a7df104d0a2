// Where the provider's signatures come from: implemented once by each front end (the Node
// addon: the event loop or a signer worker thread; the standalone module: the local agent).
#ifndef HSMGW_KEYLESS_REMOTE_SIGNATURE_H_
#define HSMGW_KEYLESS_REMOTE_SIGNATURE_H_

#include <cstddef>
#include <vector>

#include "keyless_key.h"
#include "provider.h"

namespace keyless {

// Signs `input` (a digest; for Ed25519, the whole message) with the remote key, as the
// SignatureAlgorithm `algorithm` of proto/hsmgateway/v1/signer.proto. On failure an error
// is raised on the thread's OpenSSL error queue and false is returned.
bool RemoteSignature(const KeylessKey& key, int algorithm, const unsigned char* input, size_t input_len,
                     std::vector<unsigned char>* signature);

// The core refused a signature request (kUnsupportedSignature: parameters it cannot map) or
// the answer it got (kBadSignatureLength): for the front end's metrics.
void RecordRefusal(const KeylessKey& key, Reason reason);

}  // namespace keyless

#endif  // HSMGW_KEYLESS_REMOTE_SIGNATURE_H_
