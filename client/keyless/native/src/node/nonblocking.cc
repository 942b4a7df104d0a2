#include "nonblocking.h"

#include <openssl/async.h>
#include <openssl/err.h>
#include <openssl/provider.h>
#include <openssl/ssl.h>
#include <uv.h>

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "provider.h"
#include "remote_signer.h"

namespace keyless {
namespace {

using Clock = std::chrono::steady_clock;
using InfoCallback = void (*)(const SSL*, int, int);

// An event Node's callbacks would have handled on the fibre: replayed later from
// the main loop. `keylog` set: a key log line; otherwise an info callback event.
struct Deferred {
  int where = 0;
  int ret = 0;
  std::string line;
  SSL_CTX_keylog_cb_func keylog = nullptr;
};

// One tracked server connection. Owned by the SSL's ex_data (freed in SSL_free).
struct Conn {
  uint64_t id = 0;
  SSL* ssl = nullptr;
  bool armed = false;
  bool decided = false;  // key checked inside the first job
  bool async = false;    // its key may pause the handshake
  bool paused = false;
  bool cancelled = false;
  bool replay_posted = false;
  InfoCallback node_info = nullptr;
  std::vector<Deferred> deferred;
  SignHandle sign;  // while a signature is in flight
};

// Wrap pairing (the thread that calls BeginWrap: the main thread).
thread_local bool t_wrapping = false;
thread_local SSL* t_new_ssl = nullptr;
thread_local int t_new_count = 0;

struct Counters {
#define HSMGW_COUNTER_FIELD(field, name) std::atomic<uint64_t> field{0};
  HSMGW_NONBLOCKING_COUNTERS(HSMGW_COUNTER_FIELD)
#undef HSMGW_COUNTER_FIELD
};

// Everything the mode keeps, in one object. Process-wide, like the OpenSSL callbacks that
// reach it (ex_data free, async and info callbacks carry no napi_env, and SSL_free may run at
// exit after every environment is gone), so it is never freed; the main environment's handles
// in it (the threadsafe function, the references, the timer) are released by its cleanup hook.
struct NonBlockingState {
  // Main thread.
  int ssl_index = -1;
  int ctx_index = -1;
  std::thread::id main_thread;
  std::unordered_map<uint64_t, Conn*> conns;
  std::unordered_map<const SSL*, Conn*> armed;
  uint64_t next_conn = 1;
  uv_timer_t* timer = nullptr;
  std::multimap<Clock::time_point, uint64_t> deadlines;  // request ids
  napi_ref resume_ref = nullptr;    // JavaScript callbacks, called from the main thread
  napi_ref dispatch_ref = nullptr;
  bool flush_posted = false;        // a kFlush event is on its way
  bool js_takes_batch = false;      // JavaScript takes the outbox itself (HoldDispatch)
  // The main loop's function; any thread posts to it, under post_mutex.
  std::mutex post_mutex;
  napi_threadsafe_function main = nullptr;
  // Any thread.
  Counters stats;
};

NonBlockingState& NB() {
  static NonBlockingState* state = new NonBlockingState();
  return *state;
}

enum class EventKind { kResume, kReplay, kLocalSign, kFlush };
struct MainEvent {
  EventKind kind;
  uint64_t id;
};

void Post(EventKind kind, uint64_t id) {
  std::lock_guard<std::mutex> lock(NB().post_mutex);
  if (NB().main == nullptr) return;
  auto* event = new MainEvent{kind, id};
  if (napi_call_threadsafe_function(NB().main, event, napi_tsfn_nonblocking) != napi_ok) delete event;
}

Conn* ConnOf(const SSL* ssl) {
  return NB().ssl_index < 0 ? nullptr : static_cast<Conn*>(SSL_get_ex_data(ssl, NB().ssl_index));
}

Conn* Find(uint64_t id) {
  auto it = NB().conns.find(id);
  return it == NB().conns.end() ? nullptr : it->second;
}

// The armed connection whose ASYNC job is running on this thread, if any.
Conn* CurrentConn() {
  if (std::this_thread::get_id() != NB().main_thread) return nullptr;
  ASYNC_JOB* job = ASYNC_get_current_job();
  if (job == nullptr) return nullptr;
  ASYNC_WAIT_CTX* wait_ctx = ASYNC_get_wait_ctx(job);
  ASYNC_callback_fn callback = nullptr;
  void* arg = nullptr;
  // libssl sets the wait context's callback argument to the SSL (SSL_set_async_callback).
  if (wait_ctx == nullptr || ASYNC_WAIT_CTX_get_callback(wait_ctx, &callback, &arg) != 1 || arg == nullptr) {
    return nullptr;
  }
  auto it = NB().armed.find(static_cast<const SSL*>(arg));
  return it == NB().armed.end() ? nullptr : it->second;
}

// Only while the job runs: clearing it while the job is paused would orphan it.
void LeaveAsyncMode(Conn* conn) { SSL_clear_mode(conn->ssl, SSL_MODE_ASYNC); }

bool KeyIsNonBlocking(EVP_PKEY* pkey) {
  if (pkey == nullptr) return false;
  const OSSL_PROVIDER* provider = EVP_PKEY_get0_provider(pkey);
  if (provider == nullptr || std::string(OSSL_PROVIDER_get0_name(provider)) != kProviderName) return false;
  char bridge[256];
  size_t len = 0;
  if (EVP_PKEY_get_utf8_string_param(pkey, kBridgeIdParam, bridge, sizeof(bridge), &len) != 1) return false;
  return BridgeIsNonBlocking(std::string(bridge, len));
}

void PostReplay(Conn* conn) {
  if (conn->replay_posted) return;
  conn->replay_posted = true;
  Post(EventKind::kReplay, conn->id);
}

void Defer(Conn* conn, Deferred event) {
  NB().stats.deferred_events++;
  conn->deferred.push_back(std::move(event));
  PostReplay(conn);
}

// Replays deferred events on the main stack. Node's callbacks may end up freeing
// the SSL, so the connection is looked up again before each one.
void FlushDeferred(uint64_t id) {
  for (;;) {
    Conn* conn = Find(id);
    if (conn == nullptr || conn->deferred.empty()) return;
    Deferred event = std::move(conn->deferred.front());
    conn->deferred.erase(conn->deferred.begin());
    if (event.keylog != nullptr) {
      event.keylog(conn->ssl, event.line.c_str());
    } else if (conn->node_info != nullptr) {
      conn->node_info(conn->ssl, event.where, event.ret);
    }
  }
}

// Node's key log callback runs JavaScript: inside a job, queue the line instead.
void KeylogTrampoline(const SSL* ssl, const char* line) {
  SSL_CTX* ctx = SSL_get_SSL_CTX(ssl);
  auto original = reinterpret_cast<SSL_CTX_keylog_cb_func>(SSL_CTX_get_ex_data(ctx, NB().ctx_index));
  if (original == nullptr) return;
  if (ASYNC_get_current_job() == nullptr) {
    original(ssl, line);
    return;
  }
  Conn* conn = ConnOf(ssl);
  if (conn != nullptr) Defer(conn, Deferred{0, 0, line, original});
}

// Node sets its key log callback on a context whenever a server with 'keylog'
// listeners accepts a connection; put the trampoline back in front of it.
void GuardKeylog(SSL_CTX* ctx) {
  if (ctx == nullptr) return;
  SSL_CTX_keylog_cb_func current = SSL_CTX_get_keylog_callback(ctx);
  if (current == nullptr || current == KeylogTrampoline) return;
  SSL_CTX_set_ex_data(ctx, NB().ctx_index, reinterpret_cast<void*>(current));
  SSL_CTX_set_keylog_callback(ctx, KeylogTrampoline);
}

// Replaces Node's info callback on armed connections. Node's runs JavaScript at
// handshake start and done, which must not happen on the job's 32 KiB stack.
void ConnInfoCallback(const SSL* ssl, int where, int ret) {
  Conn* conn = ConnOf(ssl);
  if (conn == nullptr) return;
  const bool in_job = ASYNC_get_current_job() != nullptr;
  if (in_job && (where & SSL_CB_LOOP) != 0 && (SSL_get_mode(conn->ssl) & SSL_MODE_ASYNC) != 0) {
    if (!conn->decided) {
      // The certificate (and the SNI context) are chosen by now.
      conn->decided = true;
      GuardKeylog(SSL_get_SSL_CTX(ssl));
      conn->async = KeyIsNonBlocking(SSL_get_privatekey(ssl));
      if (conn->async) {
        NB().stats.async_connections++;
      } else {
        NB().stats.not_keyless++;
        LeaveAsyncMode(conn);
      }
    }
    // Resumed handshakes sign nothing: leave async mode once our Finished is out.
    if (SSL_get_state(ssl) == TLS_ST_SW_FINISHED) LeaveAsyncMode(conn);
  }
  if ((where & (SSL_CB_HANDSHAKE_START | SSL_CB_HANDSHAKE_DONE)) == 0) return;
  if (in_job) {
    Defer(conn, Deferred{where, ret, std::string(), nullptr});
    return;
  }
  const uint64_t id = conn->id;
  const InfoCallback node_info = conn->node_info;
  FlushDeferred(id);
  if (Find(id) != nullptr && node_info != nullptr) node_info(ssl, where, ret);
}

int AsyncCallback(SSL*, void*) { return 1; }  // readiness is signalled through the main loop

// ex_data callbacks: every SSL_new on the wrapping thread is recorded; a Conn is
// freed with its SSL.
void SslNew(void* parent, void*, CRYPTO_EX_DATA*, int, long, void*) {
  if (!t_wrapping) return;
  t_new_ssl = static_cast<SSL*>(parent);
  t_new_count++;
}

void SslFree(void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {
  Conn* conn = static_cast<Conn*>(ptr);
  if (conn == nullptr) return;
  // A job still paused here cannot be unwound safely (it would run inside
  // SSL_free); it is left alone. destroySSL normally cancels it first.
  if (conn->paused) NB().stats.orphaned++;
  NB().conns.erase(conn->id);
  NB().armed.erase(conn->ssl);
  delete conn;
}

// ---- timeouts -----------------------------------------------------------------------

void ArmTimer();

void OnTimer(uv_timer_t*) {
  const Clock::time_point now = Clock::now();
  std::vector<uint64_t> expired;
  while (!NB().deadlines.empty() && NB().deadlines.begin()->first <= now) {
    expired.push_back(NB().deadlines.begin()->second);
    NB().deadlines.erase(NB().deadlines.begin());
  }
  for (uint64_t request_id : expired) {
    if (ExpireRequest(request_id)) NB().stats.timeouts++;
  }
  ArmTimer();
}

void ArmTimer() {
  if (NB().timer == nullptr) return;
  if (NB().deadlines.empty()) {
    uv_timer_stop(NB().timer);
    return;
  }
  const auto wait = std::chrono::ceil<std::chrono::milliseconds>(NB().deadlines.begin()->first - Clock::now());
  uv_timer_start(NB().timer, OnTimer, wait.count() > 0 ? static_cast<uint64_t>(wait.count()) : 0, 0);
}

void AddDeadline(uint64_t request_id, int timeout_ms) {
  const Clock::time_point at = Clock::now() + std::chrono::milliseconds(timeout_ms);
  const bool earliest = NB().deadlines.empty() || at < NB().deadlines.begin()->first;
  NB().deadlines.emplace(at, request_id);
  if (earliest) ArmTimer();
}

// ---- the main loop's function ---------------------------------------------------------

void Resume(napi_env env, napi_value resume, uint64_t id) {
  Conn* conn = Find(id);
  if (conn == nullptr || !conn->paused || conn->cancelled || conn->sign == nullptr || !SignDone(conn->sign)) {
    return;  // not paused (answer came before the pause), gone, or a stale event
  }
  GuardKeylog(SSL_get_SSL_CTX(conn->ssl));
  napi_value argv[1];
  napi_value undefined;
  if (napi_create_double(env, static_cast<double>(id), &argv[0]) != napi_ok ||
      napi_get_undefined(env, &undefined) != napi_ok) {
    return;
  }
  // resume(connId) calls handle.newSessionDone(): Cycle(), whose SSL_read resumes the job.
  if (napi_call_function(env, undefined, resume, 1, argv, nullptr) != napi_ok) {
    bool pending = false;
    napi_value exception;
    if (napi_is_exception_pending(env, &pending) == napi_ok && pending) {
      napi_get_and_clear_last_exception(env, &exception);
    }
  }
}

// Every request queued since the last take, as the flat batch dispatch() receives
// ([bridgeId, requestId, keyName, algorithm, digest] repeated); an empty array when
// there is none. False (requests left to time out) if the batch cannot be built.
bool TakeBatch(napi_env env, napi_value* batch) {
  NB().flush_posted = false;
  NB().js_takes_batch = false;
  std::vector<OutboxItem> items;
  TakeOutbox(&items);
  if (napi_create_array_with_length(env, items.size() * 5, batch) != napi_ok) return false;
  if (!items.empty()) NB().stats.dispatches++;
  uint32_t at = 0;
  for (const OutboxItem& item : items) {
    napi_value fields[5];
    void* copy = nullptr;
    if (napi_create_string_utf8(env, item.bridge_id.data(), item.bridge_id.size(), &fields[0]) != napi_ok ||
        napi_create_double(env, static_cast<double>(item.request_id), &fields[1]) != napi_ok ||
        napi_create_string_utf8(env, item.job.key_name.data(), item.job.key_name.size(), &fields[2]) != napi_ok ||
        napi_create_int32(env, item.job.algorithm, &fields[3]) != napi_ok ||
        napi_create_buffer_copy(env, item.job.digest.size(), item.job.digest.data(), &copy, &fields[4]) != napi_ok) {
      return false;
    }
    for (napi_value field : fields) {
      if (napi_set_element(env, *batch, at++, field) != napi_ok) return false;
    }
  }
  return true;
}

// The main loop's flush, for requests queued where JavaScript does not take them
// itself (see HoldDispatch): hands them to dispatch() in one call.
void Flush(napi_env env) {
  if (!NB().flush_posted) return;  // taken by JavaScript meanwhile
  napi_value dispatch, batch, undefined;
  uint32_t length = 0;
  if (!TakeBatch(env, &batch) || napi_get_array_length(env, batch, &length) != napi_ok || length == 0 ||
      napi_get_reference_value(env, NB().dispatch_ref, &dispatch) != napi_ok || napi_get_undefined(env, &undefined) != napi_ok ||
      napi_call_function(env, undefined, dispatch, 1, &batch, nullptr) != napi_ok) {
    bool pending = false;
    napi_value exception;
    if (napi_is_exception_pending(env, &pending) == napi_ok && pending) {
      napi_get_and_clear_last_exception(env, &exception);
    }
  }
}

void MainCallJs(napi_env env, napi_value resume, void*, void* data) {
  std::unique_ptr<MainEvent> event(static_cast<MainEvent*>(data));
  if (env == nullptr) return;
  switch (event->kind) {
    case EventKind::kResume:
      Resume(env, resume, event->id);
      break;
    case EventKind::kReplay: {
      Conn* conn = Find(event->id);
      if (conn != nullptr) {
        conn->replay_posted = false;
        FlushDeferred(event->id);
      }
      break;
    }
    case EventKind::kLocalSign:
      SignLocally(event->id);
      break;
    case EventKind::kFlush:
      Flush(env);
      break;
  }
}

void Cleanup(void*) {
  {
    std::lock_guard<std::mutex> lock(NB().post_mutex);
    if (NB().main != nullptr) napi_release_threadsafe_function(NB().main, napi_tsfn_abort);
    NB().main = nullptr;
  }
  if (NB().timer != nullptr) {
    uv_timer_stop(NB().timer);
    uv_close(reinterpret_cast<uv_handle_t*>(NB().timer), [](uv_handle_t* handle) {
      delete reinterpret_cast<uv_timer_t*>(handle);
    });
    NB().timer = nullptr;
  }
}

}  // namespace

bool EnableNonBlocking(napi_env env, napi_value resume, napi_value dispatch, std::string* error) {
  if (NB().main != nullptr) return true;
  if (ASYNC_is_capable() != 1) {
    *error = "this OpenSSL build cannot run ASYNC jobs";
    return false;
  }
  if (NB().ssl_index < 0) {
    NB().ssl_index = SSL_get_ex_new_index(0, nullptr, SslNew, nullptr, SslFree);
    NB().ctx_index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  }
  if (NB().ssl_index < 0 || NB().ctx_index < 0) {
    *error = "cannot allocate OpenSSL ex_data indexes";
    return false;
  }
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
    *error = "no event loop";
    return false;
  }
  napi_value name;
  napi_threadsafe_function tsfn = nullptr;
  if (napi_create_string_utf8(env, "hsmgw-keyless-resume", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_threadsafe_function(env, resume, nullptr, name, 0, 1, nullptr, nullptr, nullptr, MainCallJs,
                                      &tsfn) != napi_ok) {
    *error = "cannot create the resume function";
    return false;
  }
  if (napi_create_reference(env, resume, 1, &NB().resume_ref) != napi_ok ||
      napi_create_reference(env, dispatch, 1, &NB().dispatch_ref) != napi_ok) {
    napi_release_threadsafe_function(tsfn, napi_tsfn_abort);
    *error = "cannot keep the resume and dispatch functions";
    return false;
  }
  napi_unref_threadsafe_function(env, tsfn);  // paused handshakes alone do not keep the process alive
  NB().timer = new uv_timer_t;
  uv_timer_init(loop, NB().timer);
  uv_unref(reinterpret_cast<uv_handle_t*>(NB().timer));
  NB().main_thread = std::this_thread::get_id();
  {
    std::lock_guard<std::mutex> lock(NB().post_mutex);
    NB().main = tsfn;
  }
  napi_add_env_cleanup_hook(env, Cleanup, nullptr);
  return true;
}

void BeginWrap() {
  t_wrapping = true;
  t_new_ssl = nullptr;
  t_new_count = 0;
}

uint64_t EndWrap() {
  t_wrapping = false;
  SSL* ssl = t_new_ssl;
  t_new_ssl = nullptr;
  if (NB().main == nullptr || t_new_count != 1 || ssl == nullptr || SSL_is_server(ssl) != 1 || ConnOf(ssl) != nullptr) {
    return 0;
  }
  Conn* conn = new Conn();
  conn->id = NB().next_conn++;
  conn->ssl = ssl;
  if (SSL_set_ex_data(ssl, NB().ssl_index, conn) != 1) {
    delete conn;
    return 0;
  }
  NB().conns.emplace(conn->id, conn);
  NB().stats.tracked++;
  return conn->id;
}

void Untrack(uint64_t conn_id) {
  Conn* conn = Find(conn_id);
  if (conn == nullptr || conn->armed) return;
  SSL_set_ex_data(conn->ssl, NB().ssl_index, nullptr);
  NB().conns.erase(conn_id);
  delete conn;
}

bool Arm(uint64_t conn_id) {
  Conn* conn = Find(conn_id);
  if (conn == nullptr || conn->armed || conn->cancelled) return false;
  SSL* ssl = conn->ssl;
  SSL_set_async_callback(ssl, AsyncCallback);
  conn->node_info = SSL_get_info_callback(ssl);
  SSL_set_info_callback(ssl, ConnInfoCallback);
  GuardKeylog(SSL_get_SSL_CTX(ssl));
  SSL_set_mode(ssl, SSL_MODE_ASYNC);
  conn->armed = true;
  NB().armed.emplace(ssl, conn);
  NB().stats.armed++;
  return true;
}

void Release(uint64_t conn_id) {
  Conn* conn = Find(conn_id);
  if (conn == nullptr) return;
  conn->cancelled = true;
  conn->deferred.clear();
  if (!conn->paused) return;
  NB().stats.cancelled++;
  // Resume the job while the SSL is alive: the signature op sees `cancelled` and
  // fails, the handshake fails, the job finishes. Its errors stay here.
  ERR_set_mark();
  SSL_do_handshake(conn->ssl);
  ERR_pop_to_mark();
}

bool NonBlockingSign(const KeylessKey& key, int algorithm, const unsigned char* digest, size_t digest_len,
                     std::vector<unsigned char>* signature, bool* handled) {
  *handled = false;
  Conn* conn = CurrentConn();
  if (conn == nullptr || !conn->async || conn->cancelled) return false;
  *handled = true;
  int timeout_ms = 0;
  SignHandle sign = StartNonBlocking(key.bridge_id, key.key_name, algorithm, digest, digest_len, conn->id, &timeout_ms);
  if (sign == nullptr) {
    LeaveAsyncMode(conn);
    return false;
  }
  NB().stats.async_signs++;
  AddDeadline(SignRequestId(sign), timeout_ms);
  conn->sign = sign;
  bool paused = false;
  // Any SSL call on this connection resumes the job (data from the client, a
  // write): pause again until the answer, the timeout or the cancellation.
  while (!SignDone(sign) && !conn->cancelled) {
    if (!paused) {
      paused = true;
      NB().stats.paused++;
      NB().stats.paused_now++;
    }
    conn->paused = true;
    const int resumed = ASYNC_pause_job();
    conn->paused = false;
    if (resumed != 1) break;
  }
  if (paused) {
    NB().stats.paused_now--;
    if (!conn->cancelled) NB().stats.resumed++;  // cancelled ones are counted by Release()
  }
  conn->sign = nullptr;
  LeaveAsyncMode(conn);
  if (!SignDone(sign)) AbandonSign(sign);
  return ConcludeNonBlocking(sign, signature);
}

bool IsMainThread() { return NB().main != nullptr && std::this_thread::get_id() == NB().main_thread; }

void ResumeNow(napi_env env, uint64_t conn_id) {
  napi_value resume;
  if (napi_get_reference_value(env, NB().resume_ref, &resume) == napi_ok) Resume(env, resume, conn_id);
}

void ScheduleFlush() {
  if (NB().flush_posted || NB().js_takes_batch) return;
  NB().flush_posted = true;
  Post(EventKind::kFlush, 0);
}

void HoldDispatch() { NB().js_takes_batch = true; }

bool TakeSignRequests(napi_env env, napi_value* batch) { return TakeBatch(env, batch); }

void PostResume(uint64_t conn_id) { Post(EventKind::kResume, conn_id); }
void PostLocalSign(uint64_t request_id) { Post(EventKind::kLocalSign, request_id); }

void CountBlockingSign() { NB().stats.blocking_signs++; }

NonBlockingStats GetNonBlockingStats() {
  NonBlockingStats stats;
#define HSMGW_STATS_LOAD(field, name) stats.field = NB().stats.field.load();
  HSMGW_NONBLOCKING_COUNTERS(HSMGW_STATS_LOAD)
#undef HSMGW_STATS_LOAD
  return stats;
}

}  // namespace keyless
