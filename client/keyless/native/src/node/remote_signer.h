// Hands a signature from the thread OpenSSL runs it on (Node's main thread during a
// handshake) to a bridge's signer worker, and waits for the answer with a bound.
#ifndef HSMGW_KEYLESS_REMOTE_SIGNER_H_
#define HSMGW_KEYLESS_REMOTE_SIGNER_H_

#include <node_api.h>
#include <openssl/evp.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "provider.h"

namespace keyless {

// The outcome of one sign attempt is a Reason (provider.h): kOk, or why it failed; its
// metric label comes from the same list (SignOutcomeLabel).

// Signs `digest` with the remote key; on failure raises an OpenSSL error and
// returns false. Never blocks longer than the bridge's timeout.
bool RemoteSign(const std::string& bridge_id, const std::string& key_name, int algorithm,
                const unsigned char* digest, size_t digest_len, std::vector<unsigned char>* signature);

// Records a failure detected before or after the round trip (for metrics).
void RecordFailure(const std::string& key_name, Reason outcome);

// ---- non-blocking signing (nonblocking.cc drives these on the main thread) ----
// A signature in flight whose completion resumes its connection (ResumeNow or
// PostResume) instead of waking a waiting thread. It goes to the bridge's
// main-thread signer through the outbox, with no thread hop.
struct Request;
using SignHandle = std::shared_ptr<Request>;
// Submits the signature; nullptr (error raised, sample recorded) when refused.
SignHandle StartNonBlocking(const std::string& bridge_id, const std::string& key_name, int algorithm,
                            const unsigned char* digest, size_t digest_len, uint64_t conn_id, int* timeout_ms);
uint64_t SignRequestId(const SignHandle& handle);
bool SignDone(const SignHandle& handle);
// Gives up on a request that is not done (the connection is closing).
void AbandonSign(const SignHandle& handle);
// The outcome: the signature, or false with an error raised. Records the sample.
bool ConcludeNonBlocking(const SignHandle& handle, std::vector<unsigned char>* signature);
// Fails the request with a timeout if it is still pending (main-thread timer).
bool ExpireRequest(uint64_t request_id);
// Signs a pending request of a self-check bridge with its local key (main thread).
void SignLocally(uint64_t request_id);

// ---- bridge lifecycle (addon.cc) ----
void CreateBridge(const std::string& bridge_id, int timeout_ms, bool nonblocking);
// A bridge without worker whose (EC) key is held here; it signs only in non-blocking
// mode, so that a handshake that completes with it proves the asynchronous path.
void CreateSelfCheckBridge(const std::string& bridge_id, EVP_PKEY* key);
bool BridgeIsNonBlocking(const std::string& bridge_id);
// Fails the bridge's outstanding requests at once; later signs fail with "no signer".
void DestroyBridge(const std::string& bridge_id);
// True while a worker's function is attached to the bridge.
bool WorkerAttached(const std::string& bridge_id);
// Called on the worker thread that created `tsfn`.
bool AttachWorker(const std::string& bridge_id, napi_threadsafe_function tsfn, std::string* error);
// The worker's function is gone (released or its thread ended): fail its requests.
void WorkerGone(const std::string& bridge_id, napi_threadsafe_function tsfn);

// Request data for delivery to the signer; false if it already timed out.
struct SignJob {
  std::string key_name;
  int algorithm = 0;
  std::vector<unsigned char> digest;
};
bool PeekRequest(uint64_t request_id, SignJob* job);

// Non-blocking signatures queued since the last flush, for the main-thread signers
// (main thread). Requests that expired or were abandoned meanwhile are left out.
struct OutboxItem {
  uint64_t request_id;
  std::string bridge_id;
  SignJob job;
};
void TakeOutbox(std::vector<OutboxItem>* out);

// The signer's answer. Late answers (request gone) are dropped. A non-blocking
// request's connection is returned for the caller to resume at once when
// `resume_here` (the main thread); otherwise it is posted to the main loop. 0: none.
uint64_t CompleteRequest(uint64_t request_id, bool ok, std::vector<unsigned char> signature,
                         const std::string& error, bool resume_here);

struct Sample {
  std::string key_name;
  Reason outcome;
  double seconds;  // time the signing thread waited; negative: no round trip
};
void DrainSamples(std::vector<Sample>* out);

}  // namespace keyless

#endif  // HSMGW_KEYLESS_REMOTE_SIGNER_H_
