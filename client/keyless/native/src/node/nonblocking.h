// Non-blocking keyless handshakes (opt-in): a server connection whose key belongs
// to a non-blocking bridge runs its handshake in an OpenSSL ASYNC job
// (SSL_MODE_ASYNC); the signature op pauses the job instead of blocking Node's
// main thread, and the connection is resumed from the main loop when the answer
// (or the timeout) arrives. See docs/NON-BLOCKING.md.
//
// Everything here runs on Node's main thread, except PostResume/PostLocalSign,
// which any thread may call.
#ifndef HSMGW_KEYLESS_NONBLOCKING_H_
#define HSMGW_KEYLESS_NONBLOCKING_H_

#include <node_api.h>

#include <cstdint>
#include <string>
#include <vector>

#include "keyless_key.h"

namespace keyless {

// Sets up the ex_data indexes, the main-loop function that resumes connections
// (`resume(connId)` calls the TLSWrap handle's newSessionDone()), the dispatch of
// queued signatures (`dispatch(batch)`, once per loop turn, batch = flat
// [bridgeId, requestId, keyName, algorithm, digest, ...]) and the timeout timer.
// Once per process, on the main thread.
bool EnableNonBlocking(napi_env env, napi_value resume, napi_value dispatch, std::string* error);
bool IsMainThread();

// Pairing of a TLSWrap handle with the SSL created inside its constructor:
// BeginWrap() before tls_wrap.wrap(), EndWrap() after; 0 unless exactly one server
// SSL was created in between.
void BeginWrap();
uint64_t EndWrap();
// Forgets a connection that will not be switched (guards, missing internals).
void Untrack(uint64_t conn_id);
// Switches the connection to async mode (SSL_MODE_ASYNC, async/info callbacks).
// Called right before the handshake continues past the certificate callback.
bool Arm(uint64_t conn_id);
// destroySSL: cancels and unwinds a paused job while the SSL is still alive.
void Release(uint64_t conn_id);

// In the signature op. `handled` is false when this is not an async connection of
// a non-blocking bridge (the caller then signs blocking).
bool NonBlockingSign(const KeylessKey& key, int algorithm, const unsigned char* digest, size_t digest_len,
                     std::vector<unsigned char>* signature, bool* handled);

// Resumes a paused connection whose signature is done, from the main thread's
// JavaScript (an answer handed to completeSign there).
void ResumeNow(napi_env env, uint64_t conn_id);
// A request entered the outbox: dispatch it (with everything else queued in this
// loop turn) from the main loop, unless JavaScript takes it itself. Main thread.
void ScheduleFlush();
// JavaScript is about to continue handshakes and will take their requests with
// TakeSignRequests() right after: no main-loop flush (and its wake-up) for them.
void HoldDispatch();
// The queued requests as dispatch() receives them; ends HoldDispatch.
bool TakeSignRequests(napi_env env, napi_value* batch);

// Any thread.
void PostResume(uint64_t conn_id);
void PostLocalSign(uint64_t request_id);

// The mode's counters, listed once: X(field, its name in nonBlockingStats()).
#define HSMGW_NONBLOCKING_COUNTERS(X)                                                          \
  X(tracked, "tracked")                   /* TLSWrap handles paired with their SSL */          \
  X(armed, "armed")                       /* connections switched to async mode */            \
  X(async_connections, "asyncConnections") /* armed connections whose key is non-blocking */  \
  X(not_keyless, "notKeyless")            /* armed connections with another key */            \
  X(paused, "paused")                     /* handshake jobs paused on a signature */          \
  X(resumed, "resumed")                   /* paused jobs resumed with an outcome */           \
  X(paused_now, "pausedNow")              /* a gauge: jobs paused right now */                \
  X(cancelled, "cancelled")               /* paused jobs unwound (connection destroyed) */    \
  X(orphaned, "orphaned")                 /* connections freed while paused */                \
  X(async_signs, "asyncSigns")            /* signatures that paused their handshake */        \
  X(blocking_signs, "blockingSigns")      /* non-blocking keys' signatures that blocked */    \
  X(deferred_events, "deferredEvents")    /* main-loop events deferred to the next turn */    \
  X(timeouts, "timeouts")                 /* signatures that hit their deadline */            \
  X(dispatches, "dispatches")             /* batches handed to the main-thread signers */

struct NonBlockingStats {
#define HSMGW_STATS_FIELD(field, name) uint64_t field;
  HSMGW_NONBLOCKING_COUNTERS(HSMGW_STATS_FIELD)
#undef HSMGW_STATS_FIELD
};
NonBlockingStats GetNonBlockingStats();
// A signature with a key of a non-blocking bridge that could not pause.
void CountBlockingSign();

}  // namespace keyless

#endif  // HSMGW_KEYLESS_NONBLOCKING_H_
