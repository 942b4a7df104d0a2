// N-API face of the keyless addon. Loaded in the main thread (bridges) and in each
// signer worker (attachWorker creates the threadsafe function there).
#include <node_api.h>
#include <sys/socket.h>

#include <memory>
#include <string>
#include <vector>

#include "node_provider.h"
#include "nonblocking.h"
#include "provider.h"
#include "remote_signer.h"
#include "self_check.h"
#include "ticket_keys.h"

namespace keyless {
namespace {

#define CHECK_NAPI(env, call)                                   \
  do {                                                          \
    if ((call) != napi_ok) return ThrowLastError(env, #call);   \
  } while (0)

napi_value ThrowLastError(napi_env env, const char* what) {
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (!pending) {
    const napi_extended_error_info* info = nullptr;
    napi_get_last_error_info(env, &info);
    std::string message = std::string("keyless addon: ") +
                          (info != nullptr && info->error_message != nullptr ? info->error_message : what);
    napi_throw_error(env, nullptr, message.c_str());
  }
  return nullptr;
}

napi_value Throw(napi_env env, const std::string& message) {
  napi_throw_error(env, nullptr, message.c_str());
  return nullptr;
}

bool GetString(napi_env env, napi_value value, std::string* out) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, value, nullptr, 0, &len) != napi_ok) return false;
  out->resize(len);
  return napi_get_value_string_utf8(env, value, out->data(), len + 1, &len) == napi_ok;
}

napi_value Undefined(napi_env env) {
  napi_value result;
  napi_get_undefined(env, &result);
  return result;
}

// The worker's threadsafe function and the bridge it serves. One per worker env,
// shared by the env's instance data and the function's finalizer (either may be
// torn down first when the worker ends).
struct Attachment {
  std::string bridge_id;
  napi_threadsafe_function tsfn = nullptr;
  bool released = false;
};
using AttachmentRef = std::shared_ptr<Attachment>;

// ---- worker side --------------------------------------------------------------------

void CallJs(napi_env env, napi_value js_cb, void*, void* data) {
  std::unique_ptr<uint64_t> id(static_cast<uint64_t*>(data));
  if (env == nullptr || js_cb == nullptr) return;  // function torn down: finalizer fails requests
  SignJob job;
  if (!PeekRequest(*id, &job)) return;  // already timed out: nothing to do
  napi_value argv[4];
  void* copy = nullptr;
  napi_value undefined = Undefined(env);
  const bool ok =
      napi_create_double(env, static_cast<double>(*id), &argv[0]) == napi_ok &&
      napi_create_string_utf8(env, job.key_name.data(), job.key_name.size(), &argv[1]) == napi_ok &&
      napi_create_int32(env, job.algorithm, &argv[2]) == napi_ok &&
      napi_create_buffer_copy(env, job.digest.size(), job.digest.data(), &copy, &argv[3]) == napi_ok &&
      napi_call_function(env, undefined, js_cb, 4, argv, nullptr) == napi_ok;
  if (!ok) {
    // onSign (keyless-worker.ts) reports every JavaScript error itself, so a failed
    // call means the worker is being stopped (process.exit, termination): its
    // function's finalizer fails the request as "worker stopped".
    bool pending = false;
    napi_value exception;
    if (napi_is_exception_pending(env, &pending) == napi_ok && pending) {
      napi_get_and_clear_last_exception(env, &exception);
    }
  }
}

void FinalizeTsfn(napi_env, void* finalize_data, void*) {
  AttachmentRef* attachment = static_cast<AttachmentRef*>(finalize_data);
  WorkerGone((*attachment)->bridge_id, (*attachment)->tsfn);
  delete attachment;
}

void DeleteAttachment(napi_env, void* data, void*) { delete static_cast<AttachmentRef*>(data); }

// attachWorker(bridgeId: string, onSign: (id, keyName, algorithm, digest) => void)
napi_value AttachWorkerJs(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK_NAPI(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  std::string bridge_id;
  if (argc < 2 || !GetString(env, argv[0], &bridge_id)) return Throw(env, "attachWorker(bridgeId, onSign)");
  void* existing = nullptr;
  napi_get_instance_data(env, &existing);
  if (existing != nullptr) return Throw(env, "keyless: this thread already serves a bridge");

  AttachmentRef attachment = std::make_shared<Attachment>();
  attachment->bridge_id = bridge_id;
  napi_value name;
  CHECK_NAPI(env, napi_create_string_utf8(env, "hsmgw-keyless-sign", NAPI_AUTO_LENGTH, &name));
  auto* for_finalizer = new AttachmentRef(attachment);
  if (napi_create_threadsafe_function(env, argv[1], nullptr, name, 0, 1, for_finalizer, FinalizeTsfn,
                                      nullptr, CallJs, &attachment->tsfn) != napi_ok) {
    delete for_finalizer;
    return ThrowLastError(env, "napi_create_threadsafe_function");
  }
  std::string error;
  if (!AttachWorker(bridge_id, attachment->tsfn, &error)) {
    // The finalizer only touches this function's (empty) requests.
    napi_release_threadsafe_function(attachment->tsfn, napi_tsfn_abort);
    return Throw(env, error);
  }
  napi_set_instance_data(env, new AttachmentRef(attachment), DeleteAttachment, nullptr);
  return Undefined(env);
}

// detachWorker(): stop taking requests; outstanding ones fail at once.
napi_value DetachWorkerJs(napi_env env, napi_callback_info) {
  void* data = nullptr;
  napi_get_instance_data(env, &data);
  if (data == nullptr) return Undefined(env);
  Attachment& attachment = **static_cast<AttachmentRef*>(data);
  if (!attachment.released) {
    attachment.released = true;
    WorkerGone(attachment.bridge_id, attachment.tsfn);
    napi_release_threadsafe_function(attachment.tsfn, napi_tsfn_abort);
  }
  return Undefined(env);
}

// completeSign(requestId: number, error: string | null, signature: Uint8Array | null)
napi_value CompleteSignJs(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK_NAPI(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  double id = 0;
  if (argc < 3 || napi_get_value_double(env, argv[0], &id) != napi_ok) {
    return Throw(env, "completeSign(requestId, error, signature)");
  }
  // On the main thread (non-blocking mode) the paused handshake resumes right here.
  const bool main_thread = IsMainThread();
  uint64_t resume = 0;
  std::string error;
  bool is_typedarray = false;
  if (GetString(env, argv[1], &error)) {
    resume = CompleteRequest(static_cast<uint64_t>(id), false, {}, error, main_thread);
  } else if (napi_is_typedarray(env, argv[2], &is_typedarray) != napi_ok || !is_typedarray) {
    resume = CompleteRequest(static_cast<uint64_t>(id), false, {}, "signer returned no signature", main_thread);
  } else {
    napi_typedarray_type type;
    size_t length = 0;
    void* bytes = nullptr;
    CHECK_NAPI(env, napi_get_typedarray_info(env, argv[2], &type, &length, &bytes, nullptr, nullptr));
    const unsigned char* p = static_cast<const unsigned char*>(bytes);
    resume = CompleteRequest(static_cast<uint64_t>(id), type == napi_uint8_array,
                             std::vector<unsigned char>(p, p + (type == napi_uint8_array ? length : 0)),
                             "signer returned a non-byte array", main_thread);
  }
  if (resume != 0) ResumeNow(env, resume);
  return Undefined(env);
}

// ---- main side ----------------------------------------------------------------------

// createBridge(bridgeId: string, timeoutMs: number, nonBlocking?: boolean)
napi_value CreateBridgeJs(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK_NAPI(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  std::string bridge_id;
  int32_t timeout_ms = 0;
  bool nonblocking = false;
  if (argc < 2 || !GetString(env, argv[0], &bridge_id) ||
      napi_get_value_int32(env, argv[1], &timeout_ms) != napi_ok || timeout_ms <= 0 ||
      (argc >= 3 && napi_get_value_bool(env, argv[2], &nonblocking) != napi_ok)) {
    return Throw(env, "createBridge(bridgeId, timeoutMs, nonBlocking)");
  }
  CreateBridge(bridge_id, timeout_ms, nonblocking);
  return Undefined(env);
}

// destroyBridge(bridgeId: string)
napi_value DestroyBridgeJs(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK_NAPI(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  std::string bridge_id;
  if (argc < 1 || !GetString(env, argv[0], &bridge_id)) return Throw(env, "destroyBridge(bridgeId)");
  DestroyBridge(bridge_id);
  return Undefined(env);
}

// workerAttached(bridgeId: string): boolean
napi_value WorkerAttachedJs(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK_NAPI(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  std::string bridge_id;
  if (argc < 1 || !GetString(env, argv[0], &bridge_id)) return Throw(env, "workerAttached(bridgeId)");
  napi_value result;
  CHECK_NAPI(env, napi_get_boolean(env, WorkerAttached(bridge_id), &result));
  return result;
}

// drainSamples(): Array<[keyName: string, outcome: string (its metric label), seconds: number]>
napi_value DrainSamplesJs(napi_env env, napi_callback_info) {
  std::vector<Sample> samples;
  DrainSamples(&samples);
  napi_value result;
  CHECK_NAPI(env, napi_create_array_with_length(env, samples.size(), &result));
  for (size_t i = 0; i < samples.size(); i++) {
    napi_value row, key, outcome, seconds;
    CHECK_NAPI(env, napi_create_array_with_length(env, 3, &row));
    CHECK_NAPI(env, napi_create_string_utf8(env, samples[i].key_name.data(), samples[i].key_name.size(), &key));
    CHECK_NAPI(env, napi_create_string_utf8(env, SignOutcomeLabel(samples[i].outcome), NAPI_AUTO_LENGTH, &outcome));
    CHECK_NAPI(env, napi_create_double(env, samples[i].seconds, &seconds));
    CHECK_NAPI(env, napi_set_element(env, row, 0, key));
    CHECK_NAPI(env, napi_set_element(env, row, 1, outcome));
    CHECK_NAPI(env, napi_set_element(env, row, 2, seconds));
    CHECK_NAPI(env, napi_set_element(env, result, static_cast<uint32_t>(i), row));
  }
  return result;
}

// ---- non-blocking mode (main thread) ----------------------------------------------

bool GetConnId(napi_env env, napi_callback_info info, uint64_t* id) {
  size_t argc = 1;
  napi_value argv[1];
  double value = 0;
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok || argc < 1 ||
      napi_get_value_double(env, argv[0], &value) != napi_ok || value < 0) {
    return false;
  }
  *id = static_cast<uint64_t>(value);
  return true;
}

// enableNonBlocking(resume: (connId: number) => void, dispatch: (batch: unknown[]) => void)
napi_value EnableNonBlockingJs(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK_NAPI(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  if (argc < 2) return Throw(env, "enableNonBlocking(resume, dispatch)");
  std::string error;
  if (!EnableNonBlocking(env, argv[0], argv[1], &error)) {
    return Throw(env, "keyless: non-blocking mode unavailable: " + error);
  }
  return Undefined(env);
}

napi_value BeginWrapJs(napi_env env, napi_callback_info) {
  BeginWrap();
  return Undefined(env);
}

// endWrap(): number (0: no server SSL to track)
napi_value EndWrapJs(napi_env env, napi_callback_info) {
  napi_value result;
  CHECK_NAPI(env, napi_create_double(env, static_cast<double>(EndWrap()), &result));
  return result;
}

// untrack(connId) / release(connId)
napi_value UntrackJs(napi_env env, napi_callback_info info) {
  uint64_t id = 0;
  if (!GetConnId(env, info, &id)) return Throw(env, "untrack(connId)");
  Untrack(id);
  return Undefined(env);
}

napi_value ReleaseJs(napi_env env, napi_callback_info info) {
  uint64_t id = 0;
  if (!GetConnId(env, info, &id)) return Throw(env, "release(connId)");
  Release(id);
  return Undefined(env);
}

// arm(connId): boolean
napi_value ArmJs(napi_env env, napi_callback_info info) {
  uint64_t id = 0;
  if (!GetConnId(env, info, &id)) return Throw(env, "arm(connId)");
  napi_value result;
  CHECK_NAPI(env, napi_get_boolean(env, Arm(id), &result));
  return result;
}

// holdDispatch(): the caller takes the requests of the handshakes it continues now.
napi_value HoldDispatchJs(napi_env env, napi_callback_info) {
  HoldDispatch();
  return Undefined(env);
}

// takeSignRequests(): [bridgeId, requestId, keyName, algorithm, digest, ...]
napi_value TakeSignRequestsJs(napi_env env, napi_callback_info) {
  napi_value batch;
  if (!TakeSignRequests(env, &batch)) return ThrowLastError(env, "takeSignRequests");
  return batch;
}

// nonBlockingStats(): Record<string, number>, one entry per HSMGW_NONBLOCKING_COUNTERS
napi_value NonBlockingStatsJs(napi_env env, napi_callback_info) {
  const NonBlockingStats stats = GetNonBlockingStats();
  const std::pair<const char*, uint64_t> fields[] = {
#define HSMGW_STATS_PAIR(field, name) {name, stats.field},
      HSMGW_NONBLOCKING_COUNTERS(HSMGW_STATS_PAIR)
#undef HSMGW_STATS_PAIR
  };
  napi_value result;
  CHECK_NAPI(env, napi_create_object(env, &result));
  for (const auto& [name, value] : fields) {
    napi_value number;
    CHECK_NAPI(env, napi_create_double(env, static_cast<double>(value), &number));
    CHECK_NAPI(env, napi_set_named_property(env, result, name, number));
  }
  return result;
}

// createSelfCheckBridge(bridgeId): { certPem: string, spkiDer: Buffer }
napi_value CreateSelfCheckBridgeJs(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK_NAPI(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  std::string bridge_id;
  if (argc < 1 || !GetString(env, argv[0], &bridge_id)) return Throw(env, "createSelfCheckBridge(bridgeId)");
  EVP_PKEY* key = nullptr;
  std::string cert_pem, error;
  std::vector<unsigned char> spki;
  if (!MakeSelfCheckKey(&key, &cert_pem, &spki, &error)) return Throw(env, "keyless: " + error);
  CreateSelfCheckBridge(bridge_id, key);  // takes the key
  napi_value result, cert, der;
  void* copy = nullptr;
  CHECK_NAPI(env, napi_create_object(env, &result));
  CHECK_NAPI(env, napi_create_string_utf8(env, cert_pem.data(), cert_pem.size(), &cert));
  CHECK_NAPI(env, napi_create_buffer_copy(env, spki.size(), spki.data(), &copy, &der));
  CHECK_NAPI(env, napi_set_named_property(env, result, "certPem", cert));
  CHECK_NAPI(env, napi_set_named_property(env, result, "spkiDer", der));
  return result;
}

// peerCredentials(fd): { pid, uid, gid } of the process at the other end of a Unix
// socket (SO_PEERCRED), for `hsm-gateway agent`'s allow-list; Node has no API for it.
napi_value PeerCredentialsJs(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd = -1;
  CHECK_NAPI(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  if (argc < 1 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) return Throw(env, "peerCredentials(fd)");
  ucred credentials{};
  socklen_t size = sizeof(credentials);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &size) != 0 || size != sizeof(credentials)) {
    return Throw(env, "keyless: SO_PEERCRED failed on this socket");
  }
  napi_value result, pid, uid, gid;
  CHECK_NAPI(env, napi_create_object(env, &result));
  CHECK_NAPI(env, napi_create_int32(env, credentials.pid, &pid));
  CHECK_NAPI(env, napi_create_uint32(env, credentials.uid, &uid));
  CHECK_NAPI(env, napi_create_uint32(env, credentials.gid, &gid));
  CHECK_NAPI(env, napi_set_named_property(env, result, "pid", pid));
  CHECK_NAPI(env, napi_set_named_property(env, result, "uid", uid));
  CHECK_NAPI(env, napi_set_named_property(env, result, "gid", gid));
  return result;
}

napi_value Init(napi_env env, napi_value exports) {
  std::string error;
  if (!RegisterProvider(&error)) return Throw(env, "keyless: cannot load the OpenSSL provider: " + error);
  if (!RegisterTicketKeyFunctions(env, exports)) return ThrowLastError(env, "RegisterTicketKeyFunctions");
  const napi_property_descriptor methods[] = {
      {"createBridge", nullptr, CreateBridgeJs, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"destroyBridge", nullptr, DestroyBridgeJs, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"attachWorker", nullptr, AttachWorkerJs, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"detachWorker", nullptr, DetachWorkerJs, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"completeSign", nullptr, CompleteSignJs, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"workerAttached", nullptr, WorkerAttachedJs, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"drainSamples", nullptr, DrainSamplesJs, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"enableNonBlocking", nullptr, EnableNonBlockingJs, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"beginWrap", nullptr, BeginWrapJs, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"endWrap", nullptr, EndWrapJs, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"untrack", nullptr, UntrackJs, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"arm", nullptr, ArmJs, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"release", nullptr, ReleaseJs, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"holdDispatch", nullptr, HoldDispatchJs, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"takeSignRequests", nullptr, TakeSignRequestsJs, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"nonBlockingStats", nullptr, NonBlockingStatsJs, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"createSelfCheckBridge", nullptr, CreateSelfCheckBridgeJs, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"peerCredentials", nullptr, PeerCredentialsJs, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
  };
  CHECK_NAPI(env, napi_define_properties(env, exports, sizeof(methods) / sizeof(methods[0]), methods));
  // Checked by keyless-addon.ts against the label the TypeScript side writes.
  napi_value label;
  CHECK_NAPI(env, napi_create_string_utf8(env, kPemLabel, NAPI_AUTO_LENGTH, &label));
  CHECK_NAPI(env, napi_set_named_property(env, exports, "pemLabel", label));
  return exports;
}

}  // namespace
}  // namespace keyless

NAPI_MODULE_INIT() { return keyless::Init(env, exports); }
