#include "agent_client.h"

#include <openssl/async.h>
#include <openssl/err.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "agent_protocol.h"
#include "provider.h"

namespace keyless::agent {
namespace {

using Clock = std::chrono::steady_clock;

// Idle connections of this thread, valid only in the process that opened them.
struct Pool {
  pid_t pid = 0;
  std::vector<int> idle;
  uint32_t next_id = 1;
};
thread_local Pool t_pool;

// Wait-fd keys of a paused ASYNC job (their addresses identify them).
const char kSocketKey = 0;
const char kTimerKey = 0;

Pool& ThisPool() {
  const pid_t pid = getpid();
  if (t_pool.pid != pid) {
    // A forked child: the inherited descriptors are the parent's conversations.
    for (int fd : t_pool.idle) close(fd);
    t_pool.idle.clear();
    t_pool.pid = pid;
  }
  return t_pool;
}

int Connect(const Settings& settings, std::string* why) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (settings.socket_path.size() >= sizeof(address.sun_path)) {
    *why = "the socket path is too long";
    return -1;
  }
  std::memcpy(address.sun_path, settings.socket_path.c_str(), settings.socket_path.size() + 1);
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    *why = std::strerror(errno);
    return -1;
  }
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    *why = std::strerror(errno);
    close(fd);
    return -1;
  }
  return fd;
}

int RemainingMs(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left > 0 ? static_cast<int>(left) : 0;
}

// Waits until `fd` is readable (or writable): the paused job's wake-up inside an ASYNC job,
// poll() otherwise. False when the deadline passed first.
bool WaitFor(int fd, short events, Clock::time_point deadline, int timer_fd) {
  for (;;) {
    pollfd p{fd, events, 0};
    const bool in_job = ASYNC_get_current_job() != nullptr && timer_fd >= 0;
    const int ready = poll(&p, 1, in_job ? 0 : RemainingMs(deadline));
    if (ready > 0) return true;
    if (ready < 0 && errno != EINTR) return true;  // the read or write reports the error
    if (RemainingMs(deadline) == 0) return false;
    if (in_job) ASYNC_pause_job();  // resumed when the socket or the timer fires
  }
}

// Inside an ASYNC job (HAProxy's ssl-mode-async) the job's wait context, which belongs to the
// TLS connection, holds a connection to the agent and a timer of its own, registered once as
// its wait fds: the server polls them and resumes the job. They stay registered, open, until
// the wait context is freed with the TLS connection (the cleanup callback closes them), as the
// server expects of an engine's fds: an fd it polls is never closed or reused under it.
struct JobFds {
  int socket = -1;
  int timer = -1;
  bool spent = false;  // the socket served a signature and was shut down
};

void CloseJobFd(ASYNC_WAIT_CTX*, const void* key, OSSL_ASYNC_FD fd, void* custom) {
  close(fd);
  if (key == &kSocketKey) delete static_cast<JobFds*>(custom);
}

// This job's connection and timer, made on first use; nullptr outside a job (or if they cannot
// be made: the caller then waits blocking).
JobFds* JobWaitFds(const Settings& settings, std::string* why) {
  ASYNC_JOB* job = ASYNC_get_current_job();
  ASYNC_WAIT_CTX* ctx = job != nullptr ? ASYNC_get_wait_ctx(job) : nullptr;
  if (ctx == nullptr) return nullptr;
  OSSL_ASYNC_FD fd = -1;
  void* custom = nullptr;
  if (ASYNC_WAIT_CTX_get_fd(ctx, &kSocketKey, &fd, &custom) == 1 && custom != nullptr) {
    return static_cast<JobFds*>(custom);
  }
  auto* fds = new JobFds();
  fds->timer = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
  fds->socket = fds->timer >= 0 ? Connect(settings, why) : -1;
  if (fds->timer < 0 || fds->socket < 0) {
    if (fds->timer >= 0) close(fds->timer);
    delete fds;
    return nullptr;
  }
  ASYNC_WAIT_CTX_set_wait_fd(ctx, &kSocketKey, fds->socket, fds, CloseJobFd);
  ASYNC_WAIT_CTX_set_wait_fd(ctx, &kTimerKey, fds->timer, nullptr, CloseJobFd);
  return fds;
}

void ArmTimer(int timer, int timeout_ms) {
  itimerspec spec{};
  spec.it_value.tv_sec = timeout_ms / 1000;
  spec.it_value.tv_nsec = static_cast<long>(timeout_ms % 1000) * 1000000L;
  timerfd_settime(timer, 0, &spec, nullptr);
}

void DisarmTimer(int timer) {
  itimerspec spec{};
  timerfd_settime(timer, 0, &spec, nullptr);
  uint64_t expirations = 0;
  ssize_t ignored = read(timer, &expirations, sizeof(expirations));  // a fired timer stays readable
  (void)ignored;
}

enum class Io { kOk, kTimeout, kFailed };

Io WriteAll(int fd, const std::vector<unsigned char>& data, Clock::time_point deadline, int timer) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n > 0) {
      done += static_cast<size_t>(n);
    } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      if (!WaitFor(fd, POLLOUT, deadline, timer)) return Io::kTimeout;
    } else {
      return Io::kFailed;
    }
  }
  return Io::kOk;
}

Io ReadExactly(int fd, unsigned char* out, size_t len, Clock::time_point deadline, int timer) {
  size_t done = 0;
  while (done < len) {
    const ssize_t n = recv(fd, out + done, len - done, 0);
    if (n > 0) {
      done += static_cast<size_t>(n);
    } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      if (!WaitFor(fd, POLLIN, deadline, timer)) return Io::kTimeout;
    } else {
      return Io::kFailed;  // 0: the agent closed the connection
    }
  }
  return Io::kOk;
}

// One attempt; *stale when a kept connection failed before any answer (worth one retry).
bool SignOnce(const Settings& settings, const std::string& key_name, int algorithm, const unsigned char* input,
              size_t input_len, Clock::time_point deadline, bool may_reuse, std::vector<unsigned char>* signature,
              bool* stale) {
  Pool& pool = ThisPool();
  std::string why;
  JobFds* job = JobWaitFds(settings, &why);
  if (job != nullptr && job->spent) job = nullptr;  // a second signature on this TLS connection: wait blocking
  int fd = -1;
  bool reused = false;
  if (job != nullptr) {
    fd = job->socket;
    ArmTimer(job->timer, RemainingMs(deadline));
  } else if (may_reuse && !pool.idle.empty()) {
    fd = pool.idle.back();
    pool.idle.pop_back();
    reused = true;
  } else {
    fd = Connect(settings, &why);
  }
  if (fd < 0) {
    RaiseError(kNoSigner, "keyless: cannot reach the agent at %s (%s); is hsm-gateway agent running?",
               settings.socket_path.c_str(), why.c_str());
    return false;
  }
  const int timer = job != nullptr ? job->timer : -1;
  const uint32_t id = pool.next_id++;
  const std::vector<unsigned char> request = EncodeSignRequest(id, algorithm, key_name, input, input_len);
  Io io = WriteAll(fd, request, deadline, timer);
  unsigned char header[4];
  std::vector<unsigned char> body;
  if (io == Io::kOk) io = ReadExactly(fd, header, sizeof(header), deadline, timer);
  if (io == Io::kOk) {
    const uint32_t len = (static_cast<uint32_t>(header[0]) << 24) | (static_cast<uint32_t>(header[1]) << 16) |
                         (static_cast<uint32_t>(header[2]) << 8) | header[3];
    if (len > kMaxBody) {
      io = Io::kFailed;
    } else {
      body.resize(len);
      io = ReadExactly(fd, body.data(), len, deadline, timer);
    }
  }
  Answer answer;
  const bool decoded = io == Io::kOk && DecodeAnswer(body.data(), body.size(), &answer) && answer.request_id == id;
  if (job != nullptr) {
    // The job's socket served its signature: release the agent's end; the fd itself stays
    // open and registered until the TLS connection's wait context is freed.
    DisarmTimer(job->timer);
    shutdown(fd, SHUT_RDWR);
    job->spent = true;
  } else if (decoded) {
    pool.idle.push_back(fd);
  } else {
    close(fd);  // a late or garbled answer would confuse the next request
  }
  if (!decoded) {
    *stale = reused && io == Io::kFailed;
    if (io == Io::kTimeout) {
      RaiseError(kSignTimedOut, "keyless: the agent at %s did not answer within %d ms (key '%s')",
                 settings.socket_path.c_str(), settings.timeout_ms, key_name.c_str());
    } else {
      RaiseError(kSignerFailed, "keyless: the connection to the agent at %s failed while signing with key '%s'",
                 settings.socket_path.c_str(), key_name.c_str());
    }
    return false;
  }
  if (!answer.ok) {
    RaiseError(kSignerFailed, "keyless: the gateway refused to sign with key '%s' (gRPC code %d): %s",
               key_name.c_str(), answer.code, answer.message.c_str());
    return false;
  }
  *signature = std::move(answer.signature);
  return true;
}

}  // namespace

bool Sign(const Settings& settings, const std::string& key_name, int algorithm, const unsigned char* input,
          size_t input_len, std::vector<unsigned char>* signature) {
  const Clock::time_point deadline = Clock::now() + std::chrono::milliseconds(settings.timeout_ms);
  // A kept connection may have died with an agent restart: one more try on a fresh one.
  for (bool retried = false;; retried = true) {
    bool stale = false;
    const bool ok = SignOnce(settings, key_name, algorithm, input, input_len, deadline, !retried, signature, &stale);
    if (ok || !stale || retried) return ok;
    ERR_clear_error();
  }
}

}  // namespace keyless::agent
