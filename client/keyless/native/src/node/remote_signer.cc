#include "remote_signer.h"

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "algorithms.h"
#include "nonblocking.h"
#include "provider.h"

namespace keyless {

struct Request {
  uint64_t id = 0;
  std::string bridge_id;
  napi_threadsafe_function tsfn = nullptr;  // the worker it was handed to
  uint64_t conn_id = 0;                     // non-blocking: the connection to resume
  SignJob job;
  std::mutex mutex;
  std::condition_variable done_cv;
  bool done = false;
  Reason outcome = kOk;
  std::vector<unsigned char> signature;
  std::string error;
  std::chrono::steady_clock::time_point start;
  int timeout_ms = 0;
};

namespace {

using Clock = std::chrono::steady_clock;
using PkeyRef = std::shared_ptr<EVP_PKEY>;

struct Bridge {
  int timeout_ms = 2000;
  bool nonblocking = false;
  napi_threadsafe_function tsfn = nullptr;  // null while no worker is attached
  PkeyRef local_key;                        // self-check bridge only
};

constexpr size_t kMaxSamples = 100000;

// Process-wide state. Allocated once and never destroyed, so that a worker thread
// still finishing during process exit never touches a destroyed mutex.
struct State {
  std::mutex mutex;
  std::unordered_map<std::string, Bridge> bridges;
  std::unordered_map<uint64_t, std::shared_ptr<Request>> pending;
  uint64_t next_id = 1;
  std::vector<Sample> samples;
  std::vector<std::shared_ptr<Request>> outbox;  // non-blocking requests not yet dispatched
};

State& S() {
  static State* state = new State();
  return *state;
}

// True on a thread that runs a signer worker: a sign requested there would wait
// for itself, so it fails at once.
thread_local bool t_signer_thread = false;

void AddSampleLocked(const std::string& key_name, Reason outcome, double seconds) {
  if (S().samples.size() < kMaxSamples) S().samples.push_back({key_name, outcome, seconds});
}

// Settles a request once. A non-blocking one's connection is posted to the main
// loop, or returned when `post_resume` is false (the caller resumes it). 0: none.
uint64_t Finish(const std::shared_ptr<Request>& request, Reason outcome,
                std::vector<unsigned char> signature, const std::string& error, bool post_resume = true) {
  {
    std::lock_guard<std::mutex> lock(request->mutex);
    if (request->done) return 0;
    request->done = true;
    request->outcome = outcome;
    request->signature = std::move(signature);
    request->error = error;
    request->done_cv.notify_all();
  }
  if (request->conn_id == 0) return 0;
  if (!post_resume) return request->conn_id;
  PostResume(request->conn_id);
  return 0;
}

// Removes and fails the pending requests of a bridge (only those handed to `tsfn`
// when it is not null). Caller holds S().mutex.
void FailPendingLocked(const std::string& bridge_id, napi_threadsafe_function tsfn,
                       Reason outcome, const char* error) {
  for (auto it = S().pending.begin(); it != S().pending.end();) {
    if (it->second->bridge_id == bridge_id && (tsfn == nullptr || it->second->tsfn == tsfn)) {
      Finish(it->second, outcome, {}, error);
      it = S().pending.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace

namespace {

// Registers a request and hands it to the bridge's worker (or, for a self-check
// bridge, to the main thread's local signer). nullptr when refused, with an
// error raised and a sample recorded.
std::shared_ptr<Request> Submit(const std::string& bridge_id, const std::string& key_name, int algorithm,
                                const unsigned char* digest, size_t digest_len, uint64_t conn_id) {
  auto request = std::make_shared<Request>();
  request->start = Clock::now();
  std::lock_guard<std::mutex> lock(S().mutex);
  auto bridge = S().bridges.find(bridge_id);
  Reason refused = kOk;
  if (t_signer_thread) {
    refused = kSignOnSignerThread;
    RaiseError(kSignOnSignerThread, "keyless: sign for key '%s' requested on a signer worker "
               "thread; refused because it would wait for itself", key_name.c_str());
  } else if (bridge == S().bridges.end()) {
    refused = kNoSigner;
    RaiseError(kNoSigner, "keyless: no signer for key '%s': its bridge is closed or was never "
               "started in this process", key_name.c_str());
  } else if (bridge->second.local_key != nullptr && conn_id == 0) {
    refused = kUnsupportedSignature;
    RaiseError(kNonBlockingOnly, "keyless: self-check key '%s' signs only in non-blocking mode",
               key_name.c_str());
  } else if (conn_id == 0 && bridge->second.tsfn == nullptr && bridge->second.local_key == nullptr) {
    refused = kWorkerNotRunning;
    RaiseError(kWorkerNotRunning, "keyless: signer worker for key '%s' is not running",
               key_name.c_str());
  }
  if (refused == kOk) {
    request->id = S().next_id++;
    request->bridge_id = bridge_id;
    request->tsfn = bridge->second.tsfn;
    request->conn_id = conn_id;
    request->timeout_ms = bridge->second.timeout_ms;
    request->job.key_name = key_name;
    request->job.algorithm = algorithm;
    request->job.digest.assign(digest, digest + digest_len);
    if (bridge->second.local_key != nullptr) {
      S().pending.emplace(request->id, request);
      PostLocalSign(request->id);
    } else if (conn_id != 0) {
      // A paused handshake: the bridge's main-thread signer takes it at the next flush.
      S().pending.emplace(request->id, request);
      S().outbox.push_back(request);
      ScheduleFlush();
    } else {
      // Called under S().mutex so that the function cannot be released meanwhile
      // (AttachWorker/WorkerGone change it under the same mutex).
      uint64_t* data = new uint64_t(request->id);
      if (napi_call_threadsafe_function(bridge->second.tsfn, data, napi_tsfn_nonblocking) != napi_ok) {
        delete data;
        refused = kWorkerNotRunning;
        RaiseError(kWorkerNotRunning, "keyless: signer worker for key '%s' is shutting down",
                   key_name.c_str());
      } else {
        S().pending.emplace(request->id, request);
      }
    }
  }
  if (refused != kOk) {
    AddSampleLocked(key_name, refused, -1);
    return nullptr;
  }
  return request;
}

// Turns a finished request into the signature or an error; records the sample.
bool Conclude(Request* request, std::vector<unsigned char>* signature) {
  const std::string& key_name = request->job.key_name;
  const double seconds = std::chrono::duration<double>(Clock::now() - request->start).count();
  Reason outcome;
  {
    std::lock_guard<std::mutex> lock(request->mutex);
    outcome = request->outcome;
  }
  {
    std::lock_guard<std::mutex> state_lock(S().mutex);
    AddSampleLocked(key_name, outcome, seconds);
  }
  switch (outcome) {
    case kOk:
      *signature = std::move(request->signature);
      return true;
    case kSignTimedOut:
      RaiseError(kSignTimedOut, "keyless: sign timed out after %d ms (key '%s')", request->timeout_ms,
                 key_name.c_str());
      return false;
    case kWorkerNotRunning:
      RaiseError(kWorkerNotRunning, "keyless: signer worker stopped while signing with key '%s'",
                 key_name.c_str());
      return false;
    case kNoSigner:
      RaiseError(kNoSigner, "keyless: bridge closed while signing with key '%s'", key_name.c_str());
      return false;
    case kSignCancelled:
      RaiseError(kSignCancelled, "keyless: connection closed while signing with key '%s'",
                 key_name.c_str());
      return false;
    default:
      RaiseError(kSignerFailed, "keyless: remote signer failed for key '%s': %s", key_name.c_str(),
                 request->error.c_str());
      return false;
  }
}

// Removes a request from the pending table and finishes it with `outcome` unless
// an answer came first.
void Drop(const std::shared_ptr<Request>& request, Reason outcome) {
  {
    std::lock_guard<std::mutex> state_lock(S().mutex);
    S().pending.erase(request->id);  // a late answer finds nothing and is dropped
  }
  std::lock_guard<std::mutex> lock(request->mutex);
  if (!request->done) {
    request->done = true;
    request->outcome = outcome;
  }
}

}  // namespace

bool RemoteSign(const std::string& bridge_id, const std::string& key_name, int algorithm,
                const unsigned char* digest, size_t digest_len, std::vector<unsigned char>* signature) {
  std::shared_ptr<Request> request = Submit(bridge_id, key_name, algorithm, digest, digest_len, 0);
  if (request == nullptr) return false;
  bool answered;
  {
    std::unique_lock<std::mutex> lock(request->mutex);
    answered = request->done_cv.wait_for(lock, std::chrono::milliseconds(request->timeout_ms),
                                         [&] { return request->done; });
  }
  if (!answered) Drop(request, kSignTimedOut);
  return Conclude(request.get(), signature);
}

SignHandle StartNonBlocking(const std::string& bridge_id, const std::string& key_name, int algorithm,
                            const unsigned char* digest, size_t digest_len, uint64_t conn_id, int* timeout_ms) {
  SignHandle request = Submit(bridge_id, key_name, algorithm, digest, digest_len, conn_id);
  if (request != nullptr) *timeout_ms = request->timeout_ms;
  return request;
}

uint64_t SignRequestId(const SignHandle& handle) { return handle->id; }

bool SignDone(const SignHandle& handle) {
  std::lock_guard<std::mutex> lock(handle->mutex);
  return handle->done;
}

void AbandonSign(const SignHandle& handle) { Drop(handle, kSignCancelled); }

bool ConcludeNonBlocking(const SignHandle& handle, std::vector<unsigned char>* signature) {
  return Conclude(handle.get(), signature);
}

bool ExpireRequest(uint64_t request_id) {
  std::shared_ptr<Request> request;
  {
    std::lock_guard<std::mutex> lock(S().mutex);
    auto it = S().pending.find(request_id);
    if (it == S().pending.end()) return false;
    request = it->second;
    S().pending.erase(it);
  }
  Finish(request, kSignTimedOut, {}, "");
  return true;
}

void SignLocally(uint64_t request_id) {
  std::shared_ptr<Request> request;
  PkeyRef key;
  {
    std::lock_guard<std::mutex> lock(S().mutex);
    auto it = S().pending.find(request_id);
    if (it == S().pending.end()) return;
    request = it->second;
    auto bridge = S().bridges.find(request->bridge_id);
    if (bridge != S().bridges.end()) key = bridge->second.local_key;
  }
  const int algorithm = request->job.algorithm;
  std::vector<unsigned char> signature;
  bool ok = false;
  if (key != nullptr && IsEcdsa(algorithm)) {
    EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_from_pkey(LibCtx(), key.get(), kNotThisProvider);
    EVP_MD* md = EVP_MD_fetch(LibCtx(), HashOf(algorithm)->digest, kNotThisProvider);
    size_t len = static_cast<size_t>(EVP_PKEY_get_size(key.get()));
    signature.resize(len);
    ok = ctx != nullptr && md != nullptr && EVP_PKEY_sign_init(ctx) == 1 &&
         EVP_PKEY_CTX_set_signature_md(ctx, md) == 1 &&
         EVP_PKEY_sign(ctx, signature.data(), &len, request->job.digest.data(), request->job.digest.size()) == 1;
    signature.resize(ok ? len : 0);
    EVP_MD_free(md);
    EVP_PKEY_CTX_free(ctx);
  }
  CompleteRequest(request_id, ok, std::move(signature), "self-check key cannot make this signature", false);
}

void RecordFailure(const std::string& key_name, Reason outcome) {
  std::lock_guard<std::mutex> lock(S().mutex);
  AddSampleLocked(key_name, outcome, -1);
}

void CreateBridge(const std::string& bridge_id, int timeout_ms, bool nonblocking) {
  std::lock_guard<std::mutex> lock(S().mutex);
  Bridge& bridge = S().bridges[bridge_id];
  bridge.timeout_ms = timeout_ms;
  bridge.nonblocking = nonblocking;
}

void CreateSelfCheckBridge(const std::string& bridge_id, EVP_PKEY* key) {
  std::lock_guard<std::mutex> lock(S().mutex);
  Bridge& bridge = S().bridges[bridge_id];
  bridge.nonblocking = true;
  bridge.local_key = PkeyRef(key, EVP_PKEY_free);
}

bool BridgeIsNonBlocking(const std::string& bridge_id) {
  std::lock_guard<std::mutex> lock(S().mutex);
  auto bridge = S().bridges.find(bridge_id);
  return bridge != S().bridges.end() && bridge->second.nonblocking;
}

void DestroyBridge(const std::string& bridge_id) {
  std::lock_guard<std::mutex> lock(S().mutex);
  S().bridges.erase(bridge_id);
  FailPendingLocked(bridge_id, nullptr, kNoSigner, "bridge closed");
}

bool WorkerAttached(const std::string& bridge_id) {
  std::lock_guard<std::mutex> lock(S().mutex);
  auto bridge = S().bridges.find(bridge_id);
  return bridge != S().bridges.end() && bridge->second.tsfn != nullptr;
}

bool AttachWorker(const std::string& bridge_id, napi_threadsafe_function tsfn, std::string* error) {
  std::lock_guard<std::mutex> lock(S().mutex);
  auto bridge = S().bridges.find(bridge_id);
  if (bridge == S().bridges.end()) {
    *error = "keyless: unknown or closed bridge " + bridge_id;
    return false;
  }
  if (bridge->second.tsfn != nullptr) {
    *error = "keyless: bridge " + bridge_id + " already has a signer worker";
    return false;
  }
  bridge->second.tsfn = tsfn;
  t_signer_thread = true;
  return true;
}

void WorkerGone(const std::string& bridge_id, napi_threadsafe_function tsfn) {
  std::lock_guard<std::mutex> lock(S().mutex);
  auto bridge = S().bridges.find(bridge_id);
  if (bridge != S().bridges.end() && bridge->second.tsfn == tsfn) bridge->second.tsfn = nullptr;
  FailPendingLocked(bridge_id, tsfn, kWorkerNotRunning, "signer worker stopped");
}

bool PeekRequest(uint64_t request_id, SignJob* job) {
  std::lock_guard<std::mutex> lock(S().mutex);
  auto it = S().pending.find(request_id);
  if (it == S().pending.end()) return false;
  *job = it->second->job;
  return true;
}

void TakeOutbox(std::vector<OutboxItem>* out) {
  std::lock_guard<std::mutex> lock(S().mutex);
  for (const std::shared_ptr<Request>& request : S().outbox) {
    if (S().pending.count(request->id) == 0) continue;  // expired or abandoned before dispatch
    out->push_back(OutboxItem{request->id, request->bridge_id, request->job});
  }
  S().outbox.clear();
}

uint64_t CompleteRequest(uint64_t request_id, bool ok, std::vector<unsigned char> signature,
                         const std::string& error, bool resume_here) {
  std::shared_ptr<Request> request;
  {
    std::lock_guard<std::mutex> lock(S().mutex);
    auto it = S().pending.find(request_id);
    if (it == S().pending.end()) return 0;  // timed out or failed already: drop
    request = it->second;
    S().pending.erase(it);
  }
  return Finish(request, ok ? kOk : kSignerFailed, std::move(signature), error, !resume_here);
}

void DrainSamples(std::vector<Sample>* out) {
  std::lock_guard<std::mutex> lock(S().mutex);
  out->swap(S().samples);
  S().samples.clear();
}

}  // namespace keyless
