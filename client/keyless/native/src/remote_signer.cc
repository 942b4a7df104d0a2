#include "remote_signer.h"

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "provider.h"

namespace keyless {
namespace {

using Clock = std::chrono::steady_clock;

struct Request {
  uint64_t id = 0;
  std::string bridge_id;
  napi_threadsafe_function tsfn = nullptr;  // the worker it was handed to
  SignJob job;
  std::mutex mutex;
  std::condition_variable done_cv;
  bool done = false;
  Outcome outcome = kOk;
  std::vector<unsigned char> signature;
  std::string error;
};

struct Bridge {
  int timeout_ms = 2000;
  napi_threadsafe_function tsfn = nullptr;  // null while no worker is attached
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
};

State& S() {
  static State* state = new State();
  return *state;
}

// True on a thread that runs a signer worker: a sign requested there would wait
// for itself, so it fails at once.
thread_local bool t_signer_thread = false;

void AddSampleLocked(const std::string& key_name, Outcome outcome, double seconds) {
  if (S().samples.size() < kMaxSamples) S().samples.push_back({key_name, outcome, seconds});
}

void Finish(const std::shared_ptr<Request>& request, Outcome outcome,
            std::vector<unsigned char> signature, const std::string& error) {
  std::lock_guard<std::mutex> lock(request->mutex);
  if (request->done) return;
  request->done = true;
  request->outcome = outcome;
  request->signature = std::move(signature);
  request->error = error;
  request->done_cv.notify_all();
}

// Removes and fails the pending requests of a bridge (only those handed to `tsfn`
// when it is not null). Caller holds S().mutex.
void FailPendingLocked(const std::string& bridge_id, napi_threadsafe_function tsfn,
                       Outcome outcome, const char* error) {
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

bool RemoteSign(const std::string& bridge_id, const std::string& key_name, int algorithm,
                const unsigned char* digest, size_t digest_len, std::vector<unsigned char>* signature) {
  const Clock::time_point start = Clock::now();
  auto request = std::make_shared<Request>();
  int timeout_ms = 0;
  {
    std::lock_guard<std::mutex> lock(S().mutex);
    auto bridge = S().bridges.find(bridge_id);
    Outcome refused = kOk;
    if (t_signer_thread) {
      refused = kSignerThread;
      RaiseError(kSignOnSignerThread, "keyless: sign for key '%s' requested on a signer worker "
                 "thread; refused because it would wait for itself", key_name.c_str());
    } else if (bridge == S().bridges.end()) {
      refused = kNoBridge;
      RaiseError(kNoSigner, "keyless: no signer for key '%s': its bridge is closed or was never "
                 "started in this process", key_name.c_str());
    } else if (bridge->second.tsfn == nullptr) {
      refused = kWorkerDead;
      RaiseError(kWorkerNotRunning, "keyless: signer worker for key '%s' is not running",
                 key_name.c_str());
    }
    if (refused == kOk) {
      request->id = S().next_id++;
      request->bridge_id = bridge_id;
      request->tsfn = bridge->second.tsfn;
      request->job.key_name = key_name;
      request->job.algorithm = algorithm;
      request->job.digest.assign(digest, digest + digest_len);
      // Called under S().mutex so that the function cannot be released meanwhile
      // (AttachWorker/WorkerGone change it under the same mutex).
      uint64_t* data = new uint64_t(request->id);
      if (napi_call_threadsafe_function(bridge->second.tsfn, data, napi_tsfn_nonblocking) != napi_ok) {
        delete data;
        refused = kWorkerDead;
        RaiseError(kWorkerNotRunning, "keyless: signer worker for key '%s' is shutting down",
                   key_name.c_str());
      } else {
        S().pending.emplace(request->id, request);
        timeout_ms = bridge->second.timeout_ms;
      }
    }
    if (refused != kOk) {
      AddSampleLocked(key_name, refused, -1);
      return false;
    }
  }

  std::unique_lock<std::mutex> lock(request->mutex);
  if (!request->done_cv.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                                 [&] { return request->done; })) {
    lock.unlock();
    {
      std::lock_guard<std::mutex> state_lock(S().mutex);
      S().pending.erase(request->id);  // a late answer finds nothing and is dropped
    }
    lock.lock();
    if (!request->done) {
      request->done = true;
      request->outcome = kTimeout;
    }
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const Outcome outcome = request->outcome;
  {
    std::lock_guard<std::mutex> state_lock(S().mutex);
    AddSampleLocked(key_name, outcome, seconds);
  }
  switch (outcome) {
    case kOk:
      *signature = std::move(request->signature);
      return true;
    case kTimeout:
      RaiseError(kSignTimedOut, "keyless: sign timed out after %d ms (key '%s')", timeout_ms,
                 key_name.c_str());
      return false;
    case kWorkerDead:
      RaiseError(kWorkerNotRunning, "keyless: signer worker stopped while signing with key '%s'",
                 key_name.c_str());
      return false;
    case kNoBridge:
      RaiseError(kNoSigner, "keyless: bridge closed while signing with key '%s'", key_name.c_str());
      return false;
    default:
      RaiseError(kSignerFailed, "keyless: remote signer failed for key '%s': %s", key_name.c_str(),
                 request->error.c_str());
      return false;
  }
}

void RecordFailure(const std::string& key_name, Outcome outcome) {
  std::lock_guard<std::mutex> lock(S().mutex);
  AddSampleLocked(key_name, outcome, -1);
}

void CreateBridge(const std::string& bridge_id, int timeout_ms) {
  std::lock_guard<std::mutex> lock(S().mutex);
  S().bridges[bridge_id].timeout_ms = timeout_ms;
}

void DestroyBridge(const std::string& bridge_id) {
  std::lock_guard<std::mutex> lock(S().mutex);
  S().bridges.erase(bridge_id);
  FailPendingLocked(bridge_id, nullptr, kNoBridge, "bridge closed");
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
  FailPendingLocked(bridge_id, tsfn, kWorkerDead, "signer worker stopped");
}

bool PeekRequest(uint64_t request_id, SignJob* job) {
  std::lock_guard<std::mutex> lock(S().mutex);
  auto it = S().pending.find(request_id);
  if (it == S().pending.end()) return false;
  *job = it->second->job;
  return true;
}

void CompleteRequest(uint64_t request_id, bool ok, std::vector<unsigned char> signature,
                     const std::string& error) {
  std::shared_ptr<Request> request;
  {
    std::lock_guard<std::mutex> lock(S().mutex);
    auto it = S().pending.find(request_id);
    if (it == S().pending.end()) return;  // timed out or failed already: drop
    request = it->second;
    S().pending.erase(it);
  }
  Finish(request, ok ? kOk : kSignerError, std::move(signature), error);
}

void DrainSamples(std::vector<Sample>* out) {
  std::lock_guard<std::mutex> lock(S().mutex);
  out->swap(S().samples);
  S().samples.clear();
}

}  // namespace keyless
