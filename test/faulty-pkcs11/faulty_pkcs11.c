/*
 * faulty_pkcs11.c - a fault-injecting PKCS#11 v2.40 module for resilience tests.
 *
 * It exports C_GetFunctionList and every entry point of CK_FUNCTION_LIST and forwards each call
 * to a real module loaded with dlopen (env FAULTY_PKCS11_TARGET, default
 * /usr/lib/softhsm/libsofthsm2.so). A control file (env FAULTY_PKCS11_CONTROL) selects faults;
 * it is re-read whenever its inode/size/mtime changes, or its content within 250 ms of a write
 * (coarse timestamps); one stat per call, and every 10 ms from a watcher thread while the module
 * is initialized, so a device removal also hits idle processes.
 *
 * Control file, one rule per line; '#' starts a comment; blank lines are ignored:
 *
 *   fail  <Function|*> <CKR_NAME|0xHEX|decimal> [once | times N | prob P] [after N]
 *         return that CKR without calling the real function. Default: every matching call.
 *         `after N` lets N matching calls through first. Counters live per rule until the
 *         file's content changes (FaultController writes a generation comment, so each of its
 *         writes resets them). Rules are tried in file order; the first one that fires wins.
 *         When the failed function would have ended an active operation (C_Sign, C_SignFinal,
 *         C_Encrypt, ...), the target's operation is finished into a scratch buffer, as a real
 *         token ends it on error, so the next C_xxxInit does not see CKR_OPERATION_ACTIVE.
 *   delay <Function|*> <ms>            sleep before forwarding (delays of matching rules add up)
 *   hang  <Function|*>                 block (re-reading the file every ~10 ms) until no hang rule
 *                                      matches any more, then carry on
 *   device removed                     the token is gone, see below
 *   trace <Function|*>                 append "<CLOCK_MONOTONIC ms> <Function> <rv>[ injected]"
 *                                      per call to the file named by env FAULTY_PKCS11_LOG
 *   seed  <N>                          seed of the PRNG used by `prob` (reset when the file changes)
 *   sessions reuse-handles             after C_Finalize, session handles are numbered from the start
 *                                      again, as SoftHSM does: a handle kept from before the
 *                                      re-initialization then names a new session
 *
 * For fail/delay/hang, `*` matches every function except C_GetFunctionList, C_Initialize and
 * C_Finalize (name those explicitly to fault them). For trace, `*` matches everything.
 * Unknown or malformed lines are reported once on stderr and ignored.
 *
 * Device removal: while `device removed` is present every call returns CKR_DEVICE_REMOVED,
 * except C_GetFunctionList, C_Initialize, C_Finalize, C_GetInfo (forwarded), C_GetSlotList
 * (tokenPresent=TRUE yields 0 slots, otherwise forwarded) and C_GetSlotInfo (forwarded, with
 * CKF_TOKEN_PRESENT cleared). On removal the real module's C_CloseAllSessions is called for every
 * slot, so its login state really dies. Session handles given to the application are virtual
 * (mapped to the real ones), so sessions from before a removal, or before C_Finalize, stay
 * CKR_SESSION_HANDLE_INVALID forever even if the real module reuses handle numbers.
 *
 * A removal first waits for calls already running inside the target to return (a rwlock held
 * shared around every forwarded call): SoftHSM frees a session's state on close even while
 * another thread is signing with it. C_Finalize waits the same way.
 *
 * Thread-safe: own state is protected by one pthread mutex that is never held while a forwarded
 * call runs (except the C_CloseAllSessions of a removal). C_Initialize arguments are forwarded
 * unchanged, so pass CKF_OS_LOCKING_OK. Checked with a 6-thread stress harness under
 * ThreadSanitizer and AddressSanitizer while faults and removals flip every 25 ms.
 *
 * Other env: FAULTY_PKCS11_DEEPBIND=1 loads the target with RTLD_DEEPBIND (needed only if this
 * module itself is loaded with RTLD_GLOBAL, because the target's exported C_* would otherwise
 * bind to ours).
 *
 * Build: gcc -std=c99 -Wall -Wextra -O2 -fPIC -shared -pthread -Wl,-Bsymbolic
 *            -I<pkcs11 headers> faulty_pkcs11.c -o libfaultypkcs11.so -ldl
 */
#define _GNU_SOURCE 1

#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Platform macros required by the OASIS pkcs11.h (the copy shipped with pkcs11js defines the same
 * macros itself; these definitions are token-for-token identical, so either header works). */
#define CK_PTR *
#define CK_DEFINE_FUNCTION(returnType, name) \
  returnType name
#define CK_DECLARE_FUNCTION(returnType, name) \
  returnType name
#define CK_DECLARE_FUNCTION_POINTER(returnType, name) \
  returnType(*name)
#define CK_CALLBACK_FUNCTION(returnType, name) \
  returnType(*name)
#ifndef NULL_PTR
#define NULL_PTR 0
#endif

#include "pkcs11.h"

#define EXPORT __attribute__((visibility("default")))
#define DEFAULT_TARGET "/usr/lib/softhsm/libsofthsm2.so"
#define LOG_PREFIX "faulty-pkcs11: "

/* ------------------------------------------------------------------------------------------ */
/* Function ids (order of CK_FUNCTION_LIST)                                                    */

#define FN_LIST(X)                                                                              \
  X(C_Initialize) X(C_Finalize) X(C_GetInfo) X(C_GetFunctionList) X(C_GetSlotList)              \
  X(C_GetSlotInfo) X(C_GetTokenInfo) X(C_GetMechanismList) X(C_GetMechanismInfo) X(C_InitToken) \
  X(C_InitPIN) X(C_SetPIN) X(C_OpenSession) X(C_CloseSession) X(C_CloseAllSessions)             \
  X(C_GetSessionInfo) X(C_GetOperationState) X(C_SetOperationState) X(C_Login) X(C_Logout)      \
  X(C_CreateObject) X(C_CopyObject) X(C_DestroyObject) X(C_GetObjectSize)                       \
  X(C_GetAttributeValue) X(C_SetAttributeValue) X(C_FindObjectsInit) X(C_FindObjects)           \
  X(C_FindObjectsFinal) X(C_EncryptInit) X(C_Encrypt) X(C_EncryptUpdate) X(C_EncryptFinal)      \
  X(C_DecryptInit) X(C_Decrypt) X(C_DecryptUpdate) X(C_DecryptFinal) X(C_DigestInit)            \
  X(C_Digest) X(C_DigestUpdate) X(C_DigestKey) X(C_DigestFinal) X(C_SignInit) X(C_Sign)         \
  X(C_SignUpdate) X(C_SignFinal) X(C_SignRecoverInit) X(C_SignRecover) X(C_VerifyInit)          \
  X(C_Verify) X(C_VerifyUpdate) X(C_VerifyFinal) X(C_VerifyRecoverInit) X(C_VerifyRecover)      \
  X(C_DigestEncryptUpdate) X(C_DecryptDigestUpdate) X(C_SignEncryptUpdate)                      \
  X(C_DecryptVerifyUpdate) X(C_GenerateKey) X(C_GenerateKeyPair) X(C_WrapKey) X(C_UnwrapKey)    \
  X(C_DeriveKey) X(C_SeedRandom) X(C_GenerateRandom) X(C_GetFunctionStatus) X(C_CancelFunction) \
  X(C_WaitForSlotEvent)

enum fn_id {
#define X(n) FN_##n,
  FN_LIST(X)
#undef X
  FN_COUNT
};

static const char *const fn_names[FN_COUNT] = {
#define X(n) #n,
    FN_LIST(X)
#undef X
};

#define FN_ALL (-1)

/* ------------------------------------------------------------------------------------------ */
/* CKR names                                                                                   */

typedef struct {
  const char *name;
  CK_RV rv;
} ckr_name_t;

#define R(n) {#n, n},
static const ckr_name_t ckr_names[] = {
    R(CKR_OK) R(CKR_CANCEL) R(CKR_HOST_MEMORY) R(CKR_SLOT_ID_INVALID) R(CKR_GENERAL_ERROR)
    R(CKR_FUNCTION_FAILED) R(CKR_ARGUMENTS_BAD) R(CKR_NO_EVENT) R(CKR_NEED_TO_CREATE_THREADS)
    R(CKR_CANT_LOCK) R(CKR_ATTRIBUTE_READ_ONLY) R(CKR_ATTRIBUTE_SENSITIVE)
    R(CKR_ATTRIBUTE_TYPE_INVALID) R(CKR_ATTRIBUTE_VALUE_INVALID) R(CKR_ACTION_PROHIBITED)
    R(CKR_DATA_INVALID) R(CKR_DATA_LEN_RANGE) R(CKR_DEVICE_ERROR) R(CKR_DEVICE_MEMORY)
    R(CKR_DEVICE_REMOVED) R(CKR_ENCRYPTED_DATA_INVALID) R(CKR_ENCRYPTED_DATA_LEN_RANGE)
    R(CKR_FUNCTION_CANCELED) R(CKR_FUNCTION_NOT_PARALLEL) R(CKR_FUNCTION_NOT_SUPPORTED)
    R(CKR_KEY_HANDLE_INVALID) R(CKR_KEY_SIZE_RANGE) R(CKR_KEY_TYPE_INCONSISTENT)
    R(CKR_KEY_NOT_NEEDED) R(CKR_KEY_CHANGED) R(CKR_KEY_NEEDED) R(CKR_KEY_INDIGESTIBLE)
    R(CKR_KEY_FUNCTION_NOT_PERMITTED) R(CKR_KEY_NOT_WRAPPABLE) R(CKR_KEY_UNEXTRACTABLE)
    R(CKR_MECHANISM_INVALID) R(CKR_MECHANISM_PARAM_INVALID) R(CKR_OBJECT_HANDLE_INVALID)
    R(CKR_OPERATION_ACTIVE) R(CKR_OPERATION_NOT_INITIALIZED) R(CKR_PIN_INCORRECT)
    R(CKR_PIN_INVALID) R(CKR_PIN_LEN_RANGE) R(CKR_PIN_EXPIRED) R(CKR_PIN_LOCKED)
    R(CKR_SESSION_CLOSED) R(CKR_SESSION_COUNT) R(CKR_SESSION_HANDLE_INVALID)
    R(CKR_SESSION_PARALLEL_NOT_SUPPORTED) R(CKR_SESSION_READ_ONLY) R(CKR_SESSION_EXISTS)
    R(CKR_SESSION_READ_ONLY_EXISTS) R(CKR_SESSION_READ_WRITE_SO_EXISTS) R(CKR_SIGNATURE_INVALID)
    R(CKR_SIGNATURE_LEN_RANGE) R(CKR_TEMPLATE_INCOMPLETE) R(CKR_TEMPLATE_INCONSISTENT)
    R(CKR_TOKEN_NOT_PRESENT) R(CKR_TOKEN_NOT_RECOGNIZED) R(CKR_TOKEN_WRITE_PROTECTED)
    R(CKR_UNWRAPPING_KEY_HANDLE_INVALID) R(CKR_UNWRAPPING_KEY_SIZE_RANGE)
    R(CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT) R(CKR_USER_ALREADY_LOGGED_IN)
    R(CKR_USER_NOT_LOGGED_IN) R(CKR_USER_PIN_NOT_INITIALIZED) R(CKR_USER_TYPE_INVALID)
    R(CKR_USER_ANOTHER_ALREADY_LOGGED_IN) R(CKR_USER_TOO_MANY_TYPES) R(CKR_WRAPPED_KEY_INVALID)
    R(CKR_WRAPPED_KEY_LEN_RANGE) R(CKR_WRAPPING_KEY_HANDLE_INVALID)
    R(CKR_WRAPPING_KEY_SIZE_RANGE) R(CKR_WRAPPING_KEY_TYPE_INCONSISTENT)
    R(CKR_RANDOM_SEED_NOT_SUPPORTED) R(CKR_RANDOM_NO_RNG) R(CKR_DOMAIN_PARAMS_INVALID)
    R(CKR_CURVE_NOT_SUPPORTED) R(CKR_BUFFER_TOO_SMALL) R(CKR_SAVED_STATE_INVALID)
    R(CKR_INFORMATION_SENSITIVE) R(CKR_STATE_UNSAVEABLE) R(CKR_CRYPTOKI_NOT_INITIALIZED)
    R(CKR_CRYPTOKI_ALREADY_INITIALIZED) R(CKR_MUTEX_BAD) R(CKR_MUTEX_NOT_LOCKED)
    R(CKR_NEW_PIN_MODE) R(CKR_NEXT_OTP) R(CKR_EXCEEDED_MAX_ITERATIONS)
    R(CKR_FIPS_SELF_TEST_FAILED) R(CKR_LIBRARY_LOAD_FAILED) R(CKR_PIN_TOO_WEAK)
    R(CKR_PUBLIC_KEY_INVALID) R(CKR_FUNCTION_REJECTED) R(CKR_VENDOR_DEFINED)
};
#undef R

static const char *ckr_name(CK_RV rv, char *buf, size_t len) {
  size_t i;
  for (i = 0; i < sizeof ckr_names / sizeof ckr_names[0]; i++)
    if (ckr_names[i].rv == rv) return ckr_names[i].name;
  snprintf(buf, len, "0x%08lX", (unsigned long)rv);
  return buf;
}

static int parse_ckr(const char *s, CK_RV *out) {
  size_t i;
  char *end;
  unsigned long v;
  for (i = 0; i < sizeof ckr_names / sizeof ckr_names[0]; i++) {
    if (strcasecmp(ckr_names[i].name, s) == 0) {
      *out = ckr_names[i].rv;
      return 1;
    }
  }
  if (!isdigit((unsigned char)s[0])) return 0;
  errno = 0;
  v = strtoul(s, &end, 0);
  if (errno || *end) return 0;
  *out = (CK_RV)v;
  return 1;
}

/* ------------------------------------------------------------------------------------------ */
/* State                                                                                       */

enum rule_kind { R_FAIL, R_DELAY, R_HANG, R_TRACE };
enum fail_mode { M_ALWAYS, M_TIMES, M_PROB };

typedef struct {
  enum rule_kind kind;
  int fn; /* FN_ALL or an fn_id */
  CK_RV rv;
  enum fail_mode mode;
  unsigned long remaining; /* M_TIMES */
  double prob;             /* M_PROB */
  unsigned long after;     /* let this many matching calls through first */
  unsigned long seen;      /* matching calls seen so far */
  double ms;               /* R_DELAY */
} rule_t;

typedef struct {
  rule_t *rules;
  size_t n;
  int removed;
  int reuse_session_handles;
  int seeded;
  uint64_t seed;
} config_t;

typedef struct sess {
  CK_SESSION_HANDLE virt, real;
  CK_SLOT_ID slot;
  struct sess *next;
} sess_t;

#define NBUCKET 1024

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
/* Held shared around every call into the target and exclusively while sessions are closed on the
 * application's behalf (device removal) and during C_Finalize: SoftHSM frees a session's state on
 * close even while another thread is still signing with it. Never take g_mu while holding it. */
static pthread_rwlock_t g_fwd = PTHREAD_RWLOCK_INITIALIZER;
static pthread_cond_t g_cond = PTHREAD_COND_INITIALIZER;

static int g_env_read;
static const char *g_control_path; /* NULL: no control file */
static const char *g_log_path;     /* NULL: no tracing */

static config_t g_cfg;
static struct {
  int valid, exists;
  dev_t dev;
  ino_t ino;
  off_t size;
  struct timespec mtime;
} g_stamp;
static char *g_content; /* last parsed content of the control file */
static size_t g_content_len;
static int g_content_valid, g_content_exists;
static uint64_t g_rng = 0x9E3779B97F4A7C15ull;

static void *g_dl;
static CK_FUNCTION_LIST_PTR g_target;
static int g_initialized;
static int g_removed;          /* removal currently in effect */
static unsigned long g_epoch;  /* bumped at every removal and C_Finalize */

static sess_t *g_sess[NBUCKET];
static CK_SESSION_HANDLE g_next_virt = 0x10001;

static pthread_t g_watcher;
static int g_watcher_running;
static int g_watcher_stop;

#define MAX_REPORTED 64
static char *g_reported[MAX_REPORTED];
static size_t g_nreported;

static CK_FUNCTION_LIST g_list;

/* ------------------------------------------------------------------------------------------ */
/* Helpers                                                                                     */

static void sleep_ms(double ms) {
  struct timespec ts;
  if (ms <= 0) return;
  ts.tv_sec = (time_t)(ms / 1000.0);
  ts.tv_nsec = (long)((ms - (double)ts.tv_sec * 1000.0) * 1e6);
  if (ts.tv_nsec >= 1000000000L) ts.tv_nsec = 999999999L;
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static uint64_t rng_next(void) { /* xorshift64* */
  g_rng ^= g_rng >> 12;
  g_rng ^= g_rng << 25;
  g_rng ^= g_rng >> 27;
  return g_rng * 0x2545F4914F6CDD1Dull;
}

static double rng_unit(void) { return (double)(rng_next() >> 11) / 9007199254740992.0; }

static void read_env_locked(void) {
  const char *s;
  if (g_env_read) return;
  g_env_read = 1;
  s = getenv("FAULTY_PKCS11_CONTROL");
  if (s && *s) g_control_path = strdup(s);
  s = getenv("FAULTY_PKCS11_LOG");
  if (s && *s) g_log_path = strdup(s);
  g_rng ^= ((uint64_t)getpid() << 32) ^ (uint64_t)(now_ms() * 1000.0);
  if (!g_rng) g_rng = 1;
}

static void report_once_locked(const char *line, const char *why) {
  size_t i;
  for (i = 0; i < g_nreported; i++)
    if (strcmp(g_reported[i], line) == 0) return;
  if (g_nreported < MAX_REPORTED) g_reported[g_nreported++] = strdup(line);
  fprintf(stderr, LOG_PREFIX "ignoring control line \"%s\": %s\n", line, why);
}

/* ------------------------------------------------------------------------------------------ */
/* Virtual session handles                                                                     */

static size_t sess_bucket(CK_SESSION_HANDLE h) { return (size_t)(h % NBUCKET); }

static CK_SESSION_HANDLE sess_add_locked(CK_SESSION_HANDLE real, CK_SLOT_ID slot) {
  sess_t *s = malloc(sizeof *s);
  size_t b;
  if (!s) return CK_INVALID_HANDLE;
  s->virt = g_next_virt++;
  if (g_next_virt == CK_INVALID_HANDLE) g_next_virt = 0x10001;
  s->real = real;
  s->slot = slot;
  b = sess_bucket(s->virt);
  s->next = g_sess[b];
  g_sess[b] = s;
  return s->virt;
}

static CK_RV sess_lookup(CK_SESSION_HANDLE virt, CK_SESSION_HANDLE *real, CK_SLOT_ID *slot) {
  sess_t *s;
  CK_RV rv = CKR_SESSION_HANDLE_INVALID;
  pthread_mutex_lock(&g_mu);
  if (!g_initialized) {
    rv = CKR_CRYPTOKI_NOT_INITIALIZED;
  } else {
    for (s = g_sess[sess_bucket(virt)]; s; s = s->next) {
      if (s->virt == virt) {
        *real = s->real;
        if (slot) *slot = s->slot;
        rv = CKR_OK;
        break;
      }
    }
  }
  pthread_mutex_unlock(&g_mu);
  return rv;
}

static void sess_remove_locked(CK_SESSION_HANDLE virt) {
  sess_t **pp = &g_sess[sess_bucket(virt)];
  while (*pp) {
    if ((*pp)->virt == virt) {
      sess_t *dead = *pp;
      *pp = dead->next;
      free(dead);
      return;
    }
    pp = &(*pp)->next;
  }
}

/* all_slots: remove every session; otherwise only those of `slot` */
static void sess_remove_slot_locked(int all_slots, CK_SLOT_ID slot) {
  size_t b;
  for (b = 0; b < NBUCKET; b++) {
    sess_t **pp = &g_sess[b];
    while (*pp) {
      if (all_slots || (*pp)->slot == slot) {
        sess_t *dead = *pp;
        *pp = dead->next;
        free(dead);
      } else {
        pp = &(*pp)->next;
      }
    }
  }
}

/* ------------------------------------------------------------------------------------------ */
/* Target module                                                                               */

static CK_RV load_target_locked(void) {
  const char *path;
  CK_C_GetFunctionList gfl;
  CK_FUNCTION_LIST_PTR list = NULL;
  CK_RV rv;
  int flags = RTLD_NOW | RTLD_LOCAL;
  const char *deep = getenv("FAULTY_PKCS11_DEEPBIND");

  if (g_target) return CKR_OK;
  path = getenv("FAULTY_PKCS11_TARGET");
  if (!path || !*path) path = DEFAULT_TARGET;
  if (deep && *deep && strcmp(deep, "0") != 0) flags |= RTLD_DEEPBIND;
  if (!g_dl) {
    g_dl = dlopen(path, flags);
    if (!g_dl) {
      fprintf(stderr, LOG_PREFIX "cannot load target %s: %s\n", path, dlerror());
      return CKR_GENERAL_ERROR;
    }
  }
  *(void **)(&gfl) = dlsym(g_dl, "C_GetFunctionList");
  if (!gfl) {
    fprintf(stderr, LOG_PREFIX "target %s has no C_GetFunctionList\n", path);
    return CKR_GENERAL_ERROR;
  }
  if (gfl == C_GetFunctionList) {
    fprintf(stderr, LOG_PREFIX "target %s resolved to this module itself "
                    "(loaded RTLD_GLOBAL? set FAULTY_PKCS11_DEEPBIND=1)\n", path);
    return CKR_GENERAL_ERROR;
  }
  rv = gfl(&list);
  if (rv != CKR_OK || !list) {
    fprintf(stderr, LOG_PREFIX "target C_GetFunctionList failed: 0x%lx\n", (unsigned long)rv);
    return rv != CKR_OK ? rv : CKR_GENERAL_ERROR;
  }
  if (list->C_Initialize == C_Initialize || list->C_Sign == C_Sign) {
    fprintf(stderr, LOG_PREFIX "target %s binds its entry points to this module "
                    "(loaded RTLD_GLOBAL? set FAULTY_PKCS11_DEEPBIND=1)\n", path);
    return CKR_GENERAL_ERROR;
  }
  g_target = list;
  return CKR_OK;
}

#define FORWARD(rv, call)           \
  do {                              \
    pthread_rwlock_rdlock(&g_fwd);  \
    (rv) = (call);                  \
    pthread_rwlock_unlock(&g_fwd);  \
  } while (0)

/* Real C_CloseAllSessions on every slot of the target (called with g_mu held). Waits until calls
 * already inside the target have returned; new ones are refused by g_removed meanwhile. */
static void target_close_all_locked(void) {
  CK_ULONG n = 0, i;
  CK_SLOT_ID *slots = NULL;
  if (!g_target || !g_initialized) return;
  pthread_rwlock_wrlock(&g_fwd);
  if (g_target->C_GetSlotList(CK_FALSE, NULL_PTR, &n) == CKR_OK && n > 0 &&
      (slots = calloc(n + 8, sizeof *slots)) != NULL) {
    n += 8;
    if (g_target->C_GetSlotList(CK_FALSE, slots, &n) == CKR_OK)
      for (i = 0; i < n; i++) g_target->C_CloseAllSessions(slots[i]);
  }
  pthread_rwlock_unlock(&g_fwd);
  free(slots);
}

/* ------------------------------------------------------------------------------------------ */
/* Control file                                                                                */

static int parse_fn(const char *s, int *fn) {
  int i;
  if (strcmp(s, "*") == 0) {
    *fn = FN_ALL;
    return 1;
  }
  for (i = 0; i < FN_COUNT; i++) {
    if (strcasecmp(fn_names[i], s) == 0 || strcasecmp(fn_names[i] + 2, s) == 0) {
      *fn = i;
      return 1;
    }
  }
  return 0;
}

static int parse_ulong(const char *s, unsigned long *out) {
  char *end;
  if (!isdigit((unsigned char)s[0])) return 0;
  errno = 0;
  *out = strtoul(s, &end, 0);
  return !errno && !*end;
}

static int parse_double(const char *s, double *out) {
  char *end;
  if (!*s) return 0;
  errno = 0;
  *out = strtod(s, &end);
  return !errno && !*end;
}

#define MAX_TOK 12

/* Parses one (comment-stripped, trimmed, non-empty) line. Returns NULL or an error message. */
static const char *parse_line(char *line, config_t *cfg) {
  char *tok[MAX_TOK];
  int nt = 0, i;
  char *p = line, *save = NULL;
  rule_t r;
  rule_t *grown;

  while (nt < MAX_TOK && (p = strtok_r(p, " \t\r", &save)) != NULL) {
    tok[nt++] = p;
    p = NULL;
  }
  if (nt == MAX_TOK && strtok_r(NULL, " \t\r", &save)) return "too many words";
  memset(&r, 0, sizeof r);

  if (strcasecmp(tok[0], "device") == 0) {
    if (nt != 2) return "expected: device removed";
    if (strcasecmp(tok[1], "removed") == 0) {
      cfg->removed = 1;
      return NULL;
    }
    if (strcasecmp(tok[1], "present") == 0) return NULL;
    return "expected: device removed";
  }
  if (strcasecmp(tok[0], "sessions") == 0) {
    if (nt != 2 || strcasecmp(tok[1], "reuse-handles") != 0) return "expected: sessions reuse-handles";
    cfg->reuse_session_handles = 1;
    return NULL;
  }
  if (strcasecmp(tok[0], "seed") == 0) {
    unsigned long v;
    if (nt != 2 || !parse_ulong(tok[1], &v)) return "expected: seed <N>";
    cfg->seeded = 1;
    cfg->seed = (uint64_t)v;
    return NULL;
  }
  if (strcasecmp(tok[0], "fail") == 0) {
    r.kind = R_FAIL;
    if (nt < 3) return "expected: fail <Function|*> <CKR> [once|times N|prob P] [after N]";
    if (!parse_fn(tok[1], &r.fn)) return "unknown function";
    if (!parse_ckr(tok[2], &r.rv)) return "unknown CKR";
    r.mode = M_ALWAYS;
    for (i = 3; i < nt; i++) {
      if (strcasecmp(tok[i], "once") == 0) {
        r.mode = M_TIMES;
        r.remaining = 1;
      } else if (strcasecmp(tok[i], "times") == 0) {
        if (i + 1 >= nt || !parse_ulong(tok[i + 1], &r.remaining)) return "times needs a count";
        r.mode = M_TIMES;
        i++;
      } else if (strcasecmp(tok[i], "prob") == 0) {
        if (i + 1 >= nt || !parse_double(tok[i + 1], &r.prob) || r.prob < 0 || r.prob > 1)
          return "prob needs a number in [0,1]";
        r.mode = M_PROB;
        i++;
      } else if (strcasecmp(tok[i], "after") == 0) {
        if (i + 1 >= nt || !parse_ulong(tok[i + 1], &r.after)) return "after needs a count";
        i++;
      } else {
        return "unknown fail option";
      }
    }
  } else if (strcasecmp(tok[0], "delay") == 0) {
    r.kind = R_DELAY;
    if (nt != 3) return "expected: delay <Function|*> <ms>";
    if (!parse_fn(tok[1], &r.fn)) return "unknown function";
    if (!parse_double(tok[2], &r.ms) || r.ms < 0) return "bad milliseconds";
  } else if (strcasecmp(tok[0], "hang") == 0) {
    r.kind = R_HANG;
    if (nt != 2) return "expected: hang <Function|*>";
    if (!parse_fn(tok[1], &r.fn)) return "unknown function";
  } else if (strcasecmp(tok[0], "trace") == 0) {
    r.kind = R_TRACE;
    if (nt != 2) return "expected: trace <Function|*>";
    if (!parse_fn(tok[1], &r.fn)) return "unknown function";
  } else {
    return "unknown keyword";
  }
  grown = realloc(cfg->rules, (cfg->n + 1) * sizeof *grown);
  if (!grown) return "out of memory";
  cfg->rules = grown;
  cfg->rules[cfg->n++] = r;
  return NULL;
}

static void parse_buffer_locked(const char *data, size_t len, config_t *cfg) {
  size_t pos = 0;
  while (pos < len) {
    const char *nl = memchr(data + pos, '\n', len - pos);
    size_t n = nl ? (size_t)(nl - (data + pos)) : len - pos;
    char *line = malloc(n + 1), *start, *end, *hash, *copy;
    const char *err;
    if (!line) return;
    memcpy(line, data + pos, n);
    line[n] = '\0';
    pos += n + 1;
    hash = strchr(line, '#');
    if (hash) *hash = '\0';
    start = line;
    while (*start && isspace((unsigned char)*start)) start++;
    end = start + strlen(start);
    while (end > start && isspace((unsigned char)end[-1])) *--end = '\0';
    if (*start) {
      copy = strdup(start);
      err = parse_line(start, cfg);
      if (err) report_once_locked(copy ? copy : start, err);
      free(copy);
    }
    free(line);
  }
}

/* Reads the whole file; returns 0 if it cannot be read. */
static int read_file(const char *path, char **data, size_t *len) {
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0 || !buf) {
    if (fd >= 0) close(fd);
    free(buf);
    return 0;
  }
  for (;;) {
    ssize_t r;
    if (n == cap) {
      char *grown = cap < (1u << 20) ? realloc(buf, cap * 2) : NULL;
      if (!grown) break; /* ignore anything beyond 1 MiB */
      buf = grown;
      cap *= 2;
    }
    r = read(fd, buf + n, cap - n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    n += (size_t)r;
  }
  close(fd);
  *data = buf;
  *len = n;
  return 1;
}

/* A file modified within this window may be rewritten again without a visible stat change
 * (coarse timestamps, inode reuse, same size): compare its content too ("racy git"). */
static int stamp_is_racy(const struct stat *st) {
  struct timespec now;
  double age;
  clock_gettime(CLOCK_REALTIME, &now);
  age = (double)(now.tv_sec - st->st_mtim.tv_sec) + (double)(now.tv_nsec - st->st_mtim.tv_nsec) / 1e9;
  return age < 0.25;
}

static void apply_removal_locked(int removed) {
  if (removed && !g_removed) {
    g_removed = 1;
    g_epoch++;
    target_close_all_locked();
    sess_remove_slot_locked(1, 0);
  } else if (!removed && g_removed) {
    g_removed = 0;
  }
}

/* Re-reads the control file if it changed. Rules (and their counters) are replaced only when the
 * content changes. Called with g_mu held. */
static void reload_locked(void) {
  struct stat st;
  int exists, same_stamp;
  char *data = NULL;
  size_t len = 0;
  config_t cfg;
  read_env_locked();
  if (!g_control_path) return;
  exists = stat(g_control_path, &st) == 0;
  same_stamp = g_stamp.valid && exists == g_stamp.exists &&
               (!exists || (st.st_dev == g_stamp.dev && st.st_ino == g_stamp.ino &&
                            st.st_size == g_stamp.size &&
                            st.st_mtim.tv_sec == g_stamp.mtime.tv_sec &&
                            st.st_mtim.tv_nsec == g_stamp.mtime.tv_nsec));
  if (same_stamp && (!exists || !stamp_is_racy(&st))) return;
  if (exists && !read_file(g_control_path, &data, &len)) return; /* vanished: retry next call */
  g_stamp.valid = 1;
  g_stamp.exists = exists;
  if (exists) {
    g_stamp.dev = st.st_dev;
    g_stamp.ino = st.st_ino;
    g_stamp.size = st.st_size;
    g_stamp.mtime = st.st_mtim;
  }
  if (g_content_valid && g_content_exists == exists &&
      (!exists || (len == g_content_len && memcmp(data, g_content, len) == 0))) {
    free(data);
    return;
  }
  memset(&cfg, 0, sizeof cfg);
  if (exists) parse_buffer_locked(data, len, &cfg);
  free(g_content);
  g_content = data;
  g_content_len = len;
  g_content_exists = exists;
  g_content_valid = 1;
  free(g_cfg.rules);
  g_cfg = cfg;
  if (g_cfg.seeded) g_rng = g_cfg.seed * 0x9E3779B97F4A7C15ull + 1;
  apply_removal_locked(g_cfg.removed);
}

static int rule_matches(const rule_t *r, int fn) {
  if (r->fn == fn) return 1;
  if (r->fn != FN_ALL) return 0;
  if (r->kind == R_TRACE) return 1;
  return fn != FN_C_GetFunctionList && fn != FN_C_Initialize && fn != FN_C_Finalize;
}

static int has_rule_locked(enum rule_kind kind, int fn) {
  size_t i;
  for (i = 0; i < g_cfg.n; i++)
    if (g_cfg.rules[i].kind == kind && rule_matches(&g_cfg.rules[i], fn)) return 1;
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Watcher thread: applies control-file changes (notably removal) while the app is idle         */

static void *watcher_main(void *arg) {
  (void)arg;
  pthread_mutex_lock(&g_mu);
  while (!g_watcher_stop) {
    struct timespec ts;
    reload_locked();
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 10 * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&g_cond, &g_mu, &ts);
  }
  pthread_mutex_unlock(&g_mu);
  return NULL;
}

static void watcher_start_locked(void) {
  if (g_watcher_running || !g_control_path) return;
  g_watcher_stop = 0;
  if (pthread_create(&g_watcher, NULL, watcher_main, NULL) == 0) g_watcher_running = 1;
}

/* Must be called without g_mu held. */
static void watcher_stop(void) {
  pthread_t t;
  pthread_mutex_lock(&g_mu);
  if (!g_watcher_running) {
    pthread_mutex_unlock(&g_mu);
    return;
  }
  g_watcher_stop = 1;
  g_watcher_running = 0;
  t = g_watcher;
  pthread_cond_broadcast(&g_cond);
  pthread_mutex_unlock(&g_mu);
  pthread_join(t, NULL);
}

/* On dlclose/exit: stop the watcher and free our own state (the target stays loaded). */
__attribute__((destructor)) static void faulty_fini(void) {
  size_t i;
  watcher_stop();
  pthread_mutex_lock(&g_mu);
  sess_remove_slot_locked(1, 0);
  free(g_cfg.rules);
  memset(&g_cfg, 0, sizeof g_cfg);
  free(g_content);
  g_content = NULL;
  g_content_valid = 0;
  g_stamp.valid = 0;
  free((void *)g_control_path);
  free((void *)g_log_path);
  g_control_path = g_log_path = NULL;
  g_env_read = 0;
  for (i = 0; i < g_nreported; i++) free(g_reported[i]);
  g_nreported = 0;
  pthread_mutex_unlock(&g_mu);
}

/* ------------------------------------------------------------------------------------------ */
/* Call bracket                                                                                */

typedef struct {
  int fn;
  int removed;  /* device removal in effect for this call */
  int injected; /* rv below was decided here, do not forward */
  CK_RV rv;
  unsigned long epoch;
} call_t;

static int exempt_from_removal(int fn) {
  return fn == FN_C_GetFunctionList || fn == FN_C_Initialize || fn == FN_C_Finalize ||
         fn == FN_C_GetInfo || fn == FN_C_GetSlotList || fn == FN_C_GetSlotInfo;
}

/* Returns 1 when the call must not be forwarded (c->rv holds the result). */
static int call_begin(call_t *c, int fn) {
  size_t i;
  double ms = 0;
  CK_RV rv;

  c->fn = fn;
  c->removed = 0;
  c->injected = 0;
  c->rv = CKR_OK;
  pthread_mutex_lock(&g_mu);
  reload_locked();
  rv = load_target_locked();
  if (rv != CKR_OK) {
    pthread_mutex_unlock(&g_mu);
    c->rv = rv;
    c->injected = 1;
    return 1;
  }
  while (has_rule_locked(R_HANG, fn)) {
    pthread_mutex_unlock(&g_mu);
    sleep_ms(10);
    pthread_mutex_lock(&g_mu);
    reload_locked();
  }
  for (i = 0; i < g_cfg.n; i++)
    if (g_cfg.rules[i].kind == R_DELAY && rule_matches(&g_cfg.rules[i], fn))
      ms += g_cfg.rules[i].ms;
  if (ms > 0) {
    pthread_mutex_unlock(&g_mu);
    sleep_ms(ms);
    pthread_mutex_lock(&g_mu);
    reload_locked();
  }
  c->epoch = g_epoch;
  c->removed = g_removed;
  if (g_removed && !exempt_from_removal(fn)) {
    c->injected = 1;
    c->rv = CKR_DEVICE_REMOVED;
  } else {
    for (i = 0; i < g_cfg.n; i++) {
      rule_t *r = &g_cfg.rules[i];
      int fire = 0;
      if (r->kind != R_FAIL || !rule_matches(r, fn)) continue;
      r->seen++;
      if (c->injected || r->seen <= r->after) continue;
      switch (r->mode) {
        case M_ALWAYS: fire = 1; break;
        case M_TIMES:
          if (r->remaining > 0) {
            r->remaining--;
            fire = 1;
          }
          break;
        case M_PROB: fire = rng_unit() < r->prob; break;
      }
      if (fire) {
        c->injected = 1;
        c->rv = r->rv;
      }
    }
  }
  pthread_mutex_unlock(&g_mu);
  return c->injected;
}

static CK_RV call_end(const call_t *c, CK_RV rv) {
  int trace;
  const char *log;
  pthread_mutex_lock(&g_mu);
  trace = has_rule_locked(R_TRACE, c->fn);
  log = g_log_path;
  pthread_mutex_unlock(&g_mu);
  if (trace && log) {
    char line[160], buf[32];
    int n = snprintf(line, sizeof line, "%.3f %s %s%s\n", now_ms(), fn_names[c->fn],
                     ckr_name(rv, buf, sizeof buf), c->injected ? " injected" : "");
    int fd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0) {
      if (n > 0 && write(fd, line, (size_t)n) < 0) {
        /* nothing sensible to do */
      }
      close(fd);
    }
  }
  return rv;
}

/* ------------------------------------------------------------------------------------------ */
/* Entry points                                                                                */

/* A function that does not take a session: forwarded unchanged. */
#define PLAIN_FN(name, params, args)                                  \
  EXPORT CK_RV name params {                                          \
    call_t c;                                                         \
    CK_RV rv;                                                         \
    if (call_begin(&c, FN_##name)) return call_end(&c, c.rv);         \
    FORWARD(rv, g_target->name args);                                 \
    return call_end(&c, rv);                                          \
  }

/* A function whose first argument is hSession: translated to the real handle as `real`.
 * `drain` runs (with `real` set) when a failure was injected: a real token terminates the active
 * operation when such a call fails, so the same is done to the target's operation (its results
 * go to scratch buffers); otherwise the next C_xxxInit would see CKR_OPERATION_ACTIVE. */
#define SESSION_FN_DRAIN(name, params, args, drain)                                 \
  EXPORT CK_RV name params {                                                        \
    call_t c;                                                                       \
    CK_SESSION_HANDLE real = CK_INVALID_HANDLE;                                     \
    CK_RV rv;                                                                       \
    if (call_begin(&c, FN_##name)) {                                                \
      if (!c.removed && c.rv != CKR_OK && c.rv != CKR_BUFFER_TOO_SMALL && g_target && \
          sess_lookup(hSession, &real, NULL) == CKR_OK) {                           \
        pthread_rwlock_rdlock(&g_fwd);                                              \
        drain;                                                                      \
        pthread_rwlock_unlock(&g_fwd);                                              \
      }                                                                             \
      return call_end(&c, c.rv);                                                    \
    }                                                                               \
    rv = sess_lookup(hSession, &real, NULL);                                        \
    if (rv == CKR_OK) FORWARD(rv, g_target->name args);                             \
    return call_end(&c, rv);                                                        \
  }
#define SESSION_FN(name, params, args) SESSION_FN_DRAIN(name, params, args, (void)real)

typedef CK_RV (*io_fn_t)(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG_PTR);
typedef CK_RV (*final_fn_t)(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG_PTR);

/* Finishes a single-part operation (C_Sign, C_Encrypt, ...) into a scratch buffer. */
static void drain_io(io_fn_t f, CK_SESSION_HANDLE h, CK_BYTE_PTR in, CK_ULONG in_len) {
  CK_ULONG n = 0;
  CK_BYTE_PTR buf;
  if (f(h, in, in_len, NULL_PTR, &n) != CKR_OK) return; /* that failure ended it already */
  buf = malloc(n ? n : 1);
  if (!buf) return;
  f(h, in, in_len, buf, &n);
  free(buf);
}

/* Finishes a multi-part operation (C_SignFinal, C_EncryptFinal, ...) into a scratch buffer. */
static void drain_final(final_fn_t f, CK_SESSION_HANDLE h) {
  CK_ULONG n = 0;
  CK_BYTE_PTR buf;
  if (f(h, NULL_PTR, &n) != CKR_OK) return;
  buf = malloc(n ? n : 1);
  if (!buf) return;
  f(h, buf, &n);
  free(buf);
}

/* Ends a multi-part verification with a signature that cannot match. */
static void drain_verify(CK_SESSION_HANDLE h) {
  CK_BYTE dummy[1] = {0};
  g_target->C_VerifyFinal(h, dummy, sizeof dummy);
}

EXPORT CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR ppFunctionList) {
  call_t c;
  if (call_begin(&c, FN_C_GetFunctionList)) return call_end(&c, c.rv);
  if (!ppFunctionList) return call_end(&c, CKR_ARGUMENTS_BAD);
  *ppFunctionList = &g_list;
  return call_end(&c, CKR_OK);
}

EXPORT CK_RV C_Initialize(CK_VOID_PTR pInitArgs) {
  call_t c;
  CK_RV rv;
  if (call_begin(&c, FN_C_Initialize)) return call_end(&c, c.rv);
  FORWARD(rv, g_target->C_Initialize(pInitArgs));
  if (rv == CKR_OK) {
    const CK_C_INITIALIZE_ARGS *a = (const CK_C_INITIALIZE_ARGS *)pInitArgs;
    pthread_mutex_lock(&g_mu);
    g_initialized = 1;
    if (!a || !(a->flags & CKF_LIBRARY_CANT_CREATE_OS_THREADS)) watcher_start_locked();
    pthread_mutex_unlock(&g_mu);
  }
  return call_end(&c, rv);
}

EXPORT CK_RV C_Finalize(CK_VOID_PTR pReserved) {
  call_t c;
  CK_RV rv;
  if (call_begin(&c, FN_C_Finalize)) return call_end(&c, c.rv);
  watcher_stop();
  pthread_rwlock_wrlock(&g_fwd); /* let calls still inside the target return first */
  rv = g_target->C_Finalize(pReserved);
  pthread_rwlock_unlock(&g_fwd);
  pthread_mutex_lock(&g_mu);
  if (rv == CKR_OK) {
    g_initialized = 0;
    g_epoch++;
    sess_remove_slot_locked(1, 0);
    if (g_cfg.reuse_session_handles) g_next_virt = 0x10001;
  } else if (g_initialized) {
    watcher_start_locked();
  }
  pthread_mutex_unlock(&g_mu);
  return call_end(&c, rv);
}

PLAIN_FN(C_GetInfo, (CK_INFO_PTR pInfo), (pInfo))

EXPORT CK_RV C_GetSlotList(CK_BBOOL tokenPresent, CK_SLOT_ID_PTR pSlotList,
                           CK_ULONG_PTR pulCount) {
  call_t c;
  CK_RV rv;
  if (call_begin(&c, FN_C_GetSlotList)) return call_end(&c, c.rv);
  if (c.removed && tokenPresent) {
    if (!pulCount) return call_end(&c, CKR_ARGUMENTS_BAD);
    *pulCount = 0;
    return call_end(&c, CKR_OK);
  }
  FORWARD(rv, g_target->C_GetSlotList(tokenPresent, pSlotList, pulCount));
  return call_end(&c, rv);
}

EXPORT CK_RV C_GetSlotInfo(CK_SLOT_ID slotID, CK_SLOT_INFO_PTR pInfo) {
  call_t c;
  CK_RV rv;
  if (call_begin(&c, FN_C_GetSlotInfo)) return call_end(&c, c.rv);
  FORWARD(rv, g_target->C_GetSlotInfo(slotID, pInfo));
  if (rv == CKR_OK && c.removed && pInfo) pInfo->flags &= ~(CK_FLAGS)CKF_TOKEN_PRESENT;
  return call_end(&c, rv);
}

PLAIN_FN(C_GetTokenInfo, (CK_SLOT_ID slotID, CK_TOKEN_INFO_PTR pInfo), (slotID, pInfo))
PLAIN_FN(C_GetMechanismList,
         (CK_SLOT_ID slotID, CK_MECHANISM_TYPE_PTR pMechanismList, CK_ULONG_PTR pulCount),
         (slotID, pMechanismList, pulCount))
PLAIN_FN(C_GetMechanismInfo,
         (CK_SLOT_ID slotID, CK_MECHANISM_TYPE type, CK_MECHANISM_INFO_PTR pInfo),
         (slotID, type, pInfo))
PLAIN_FN(C_InitToken,
         (CK_SLOT_ID slotID, CK_UTF8CHAR_PTR pPin, CK_ULONG ulPinLen, CK_UTF8CHAR_PTR pLabel),
         (slotID, pPin, ulPinLen, pLabel))
SESSION_FN(C_InitPIN, (CK_SESSION_HANDLE hSession, CK_UTF8CHAR_PTR pPin, CK_ULONG ulPinLen),
           (real, pPin, ulPinLen))
SESSION_FN(C_SetPIN,
           (CK_SESSION_HANDLE hSession, CK_UTF8CHAR_PTR pOldPin, CK_ULONG ulOldLen,
            CK_UTF8CHAR_PTR pNewPin, CK_ULONG ulNewLen),
           (real, pOldPin, ulOldLen, pNewPin, ulNewLen))

EXPORT CK_RV C_OpenSession(CK_SLOT_ID slotID, CK_FLAGS flags, CK_VOID_PTR pApplication,
                           CK_NOTIFY Notify, CK_SESSION_HANDLE_PTR phSession) {
  call_t c;
  CK_RV rv;
  CK_SESSION_HANDLE real = CK_INVALID_HANDLE, virt;
  if (call_begin(&c, FN_C_OpenSession)) return call_end(&c, c.rv);
  if (!phSession) return call_end(&c, CKR_ARGUMENTS_BAD);
  /* Notify callbacks would receive the real handle; SoftHSM never calls them. */
  FORWARD(rv, g_target->C_OpenSession(slotID, flags, pApplication, Notify, &real));
  if (rv != CKR_OK) return call_end(&c, rv);
  pthread_mutex_lock(&g_mu);
  if (g_epoch != c.epoch || g_removed) {
    /* the device went away (or C_Finalize ran) while we were opening */
    CK_RV why = g_removed ? CKR_DEVICE_REMOVED : CKR_CRYPTOKI_NOT_INITIALIZED;
    pthread_mutex_unlock(&g_mu);
    FORWARD(rv, g_target->C_CloseSession(real));
    return call_end(&c, why);
  }
  virt = sess_add_locked(real, slotID);
  pthread_mutex_unlock(&g_mu);
  if (virt == CK_INVALID_HANDLE) {
    FORWARD(rv, g_target->C_CloseSession(real));
    return call_end(&c, CKR_HOST_MEMORY);
  }
  *phSession = virt;
  return call_end(&c, CKR_OK);
}

EXPORT CK_RV C_CloseSession(CK_SESSION_HANDLE hSession) {
  call_t c;
  CK_RV rv;
  CK_SESSION_HANDLE real = CK_INVALID_HANDLE;
  if (call_begin(&c, FN_C_CloseSession)) return call_end(&c, c.rv);
  rv = sess_lookup(hSession, &real, NULL);
  if (rv != CKR_OK) return call_end(&c, rv);
  FORWARD(rv, g_target->C_CloseSession(real));
  if (rv == CKR_OK || rv == CKR_SESSION_HANDLE_INVALID || rv == CKR_SESSION_CLOSED) {
    pthread_mutex_lock(&g_mu);
    sess_remove_locked(hSession);
    pthread_mutex_unlock(&g_mu);
  }
  return call_end(&c, rv);
}

EXPORT CK_RV C_CloseAllSessions(CK_SLOT_ID slotID) {
  call_t c;
  CK_RV rv;
  if (call_begin(&c, FN_C_CloseAllSessions)) return call_end(&c, c.rv);
  FORWARD(rv, g_target->C_CloseAllSessions(slotID));
  if (rv == CKR_OK) {
    pthread_mutex_lock(&g_mu);
    sess_remove_slot_locked(0, slotID);
    pthread_mutex_unlock(&g_mu);
  }
  return call_end(&c, rv);
}

SESSION_FN(C_GetSessionInfo, (CK_SESSION_HANDLE hSession, CK_SESSION_INFO_PTR pInfo),
           (real, pInfo))
SESSION_FN(C_GetOperationState,
           (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pOperationState,
            CK_ULONG_PTR pulOperationStateLen),
           (real, pOperationState, pulOperationStateLen))
SESSION_FN(C_SetOperationState,
           (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pOperationState, CK_ULONG ulOperationStateLen,
            CK_OBJECT_HANDLE hEncryptionKey, CK_OBJECT_HANDLE hAuthenticationKey),
           (real, pOperationState, ulOperationStateLen, hEncryptionKey, hAuthenticationKey))
SESSION_FN(C_Login,
           (CK_SESSION_HANDLE hSession, CK_USER_TYPE userType, CK_UTF8CHAR_PTR pPin,
            CK_ULONG ulPinLen),
           (real, userType, pPin, ulPinLen))
SESSION_FN(C_Logout, (CK_SESSION_HANDLE hSession), (real))
SESSION_FN(C_CreateObject,
           (CK_SESSION_HANDLE hSession, CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount,
            CK_OBJECT_HANDLE_PTR phObject),
           (real, pTemplate, ulCount, phObject))
SESSION_FN(C_CopyObject,
           (CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hObject, CK_ATTRIBUTE_PTR pTemplate,
            CK_ULONG ulCount, CK_OBJECT_HANDLE_PTR phNewObject),
           (real, hObject, pTemplate, ulCount, phNewObject))
SESSION_FN(C_DestroyObject, (CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hObject),
           (real, hObject))
SESSION_FN(C_GetObjectSize,
           (CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hObject, CK_ULONG_PTR pulSize),
           (real, hObject, pulSize))
SESSION_FN(C_GetAttributeValue,
           (CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hObject, CK_ATTRIBUTE_PTR pTemplate,
            CK_ULONG ulCount),
           (real, hObject, pTemplate, ulCount))
SESSION_FN(C_SetAttributeValue,
           (CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hObject, CK_ATTRIBUTE_PTR pTemplate,
            CK_ULONG ulCount),
           (real, hObject, pTemplate, ulCount))
SESSION_FN(C_FindObjectsInit,
           (CK_SESSION_HANDLE hSession, CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount),
           (real, pTemplate, ulCount))
SESSION_FN(C_FindObjects,
           (CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE_PTR phObject, CK_ULONG ulMaxObjectCount,
            CK_ULONG_PTR pulObjectCount),
           (real, phObject, ulMaxObjectCount, pulObjectCount))
SESSION_FN(C_FindObjectsFinal, (CK_SESSION_HANDLE hSession), (real))
SESSION_FN(C_EncryptInit,
           (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey),
           (real, pMechanism, hKey))
SESSION_FN_DRAIN(C_Encrypt,
                 (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pData, CK_ULONG ulDataLen,
                  CK_BYTE_PTR pEncryptedData, CK_ULONG_PTR pulEncryptedDataLen),
                 (real, pData, ulDataLen, pEncryptedData, pulEncryptedDataLen),
                 drain_io(g_target->C_Encrypt, real, pData, ulDataLen))
SESSION_FN_DRAIN(C_EncryptUpdate,
                 (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart, CK_ULONG ulPartLen,
                  CK_BYTE_PTR pEncryptedPart, CK_ULONG_PTR pulEncryptedPartLen),
                 (real, pPart, ulPartLen, pEncryptedPart, pulEncryptedPartLen),
                 drain_final(g_target->C_EncryptFinal, real))
SESSION_FN_DRAIN(C_EncryptFinal,
                 (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pLastEncryptedPart,
                  CK_ULONG_PTR pulLastEncryptedPartLen),
                 (real, pLastEncryptedPart, pulLastEncryptedPartLen),
                 drain_final(g_target->C_EncryptFinal, real))
SESSION_FN(C_DecryptInit,
           (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey),
           (real, pMechanism, hKey))
SESSION_FN_DRAIN(C_Decrypt,
                 (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pEncryptedData, CK_ULONG ulEncryptedDataLen,
                  CK_BYTE_PTR pData, CK_ULONG_PTR pulDataLen),
                 (real, pEncryptedData, ulEncryptedDataLen, pData, pulDataLen),
                 drain_io(g_target->C_Decrypt, real, pEncryptedData, ulEncryptedDataLen))
SESSION_FN_DRAIN(C_DecryptUpdate,
                 (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pEncryptedPart, CK_ULONG ulEncryptedPartLen,
                  CK_BYTE_PTR pPart, CK_ULONG_PTR pulPartLen),
                 (real, pEncryptedPart, ulEncryptedPartLen, pPart, pulPartLen),
                 drain_final(g_target->C_DecryptFinal, real))
SESSION_FN_DRAIN(C_DecryptFinal,
                 (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pLastPart, CK_ULONG_PTR pulLastPartLen),
                 (real, pLastPart, pulLastPartLen),
                 drain_final(g_target->C_DecryptFinal, real))
SESSION_FN(C_DigestInit, (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism),
           (real, pMechanism))
SESSION_FN_DRAIN(C_Digest,
                 (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pData, CK_ULONG ulDataLen,
                  CK_BYTE_PTR pDigest, CK_ULONG_PTR pulDigestLen),
                 (real, pData, ulDataLen, pDigest, pulDigestLen),
                 drain_io(g_target->C_Digest, real, pData, ulDataLen))
SESSION_FN_DRAIN(C_DigestUpdate, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart, CK_ULONG ulPartLen),
                 (real, pPart, ulPartLen),
                 drain_final(g_target->C_DigestFinal, real))
SESSION_FN_DRAIN(C_DigestKey, (CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hKey), (real, hKey),
                 drain_final(g_target->C_DigestFinal, real))
SESSION_FN_DRAIN(C_DigestFinal,
                 (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pDigest, CK_ULONG_PTR pulDigestLen),
                 (real, pDigest, pulDigestLen),
                 drain_final(g_target->C_DigestFinal, real))
SESSION_FN(C_SignInit,
           (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey),
           (real, pMechanism, hKey))
SESSION_FN_DRAIN(C_Sign,
                 (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pData, CK_ULONG ulDataLen,
                  CK_BYTE_PTR pSignature, CK_ULONG_PTR pulSignatureLen),
                 (real, pData, ulDataLen, pSignature, pulSignatureLen),
                 drain_io(g_target->C_Sign, real, pData, ulDataLen))
SESSION_FN_DRAIN(C_SignUpdate, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart, CK_ULONG ulPartLen),
                 (real, pPart, ulPartLen),
                 drain_final(g_target->C_SignFinal, real))
SESSION_FN_DRAIN(C_SignFinal,
                 (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pSignature, CK_ULONG_PTR pulSignatureLen),
                 (real, pSignature, pulSignatureLen),
                 drain_final(g_target->C_SignFinal, real))
SESSION_FN(C_SignRecoverInit,
           (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey),
           (real, pMechanism, hKey))
SESSION_FN_DRAIN(C_SignRecover,
                 (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pData, CK_ULONG ulDataLen,
                  CK_BYTE_PTR pSignature, CK_ULONG_PTR pulSignatureLen),
                 (real, pData, ulDataLen, pSignature, pulSignatureLen),
                 drain_io(g_target->C_SignRecover, real, pData, ulDataLen))
SESSION_FN(C_VerifyInit,
           (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey),
           (real, pMechanism, hKey))
SESSION_FN_DRAIN(C_Verify,
                 (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pData, CK_ULONG ulDataLen,
                  CK_BYTE_PTR pSignature, CK_ULONG ulSignatureLen),
                 (real, pData, ulDataLen, pSignature, ulSignatureLen),
                 g_target->C_Verify(real, pData, ulDataLen, pSignature, ulSignatureLen))
SESSION_FN_DRAIN(C_VerifyUpdate, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart, CK_ULONG ulPartLen),
                 (real, pPart, ulPartLen),
                 drain_verify(real))
SESSION_FN_DRAIN(C_VerifyFinal,
                 (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pSignature, CK_ULONG ulSignatureLen),
                 (real, pSignature, ulSignatureLen),
                 g_target->C_VerifyFinal(real, pSignature, ulSignatureLen))
SESSION_FN(C_VerifyRecoverInit,
           (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey),
           (real, pMechanism, hKey))
SESSION_FN_DRAIN(C_VerifyRecover,
                 (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pSignature, CK_ULONG ulSignatureLen,
                  CK_BYTE_PTR pData, CK_ULONG_PTR pulDataLen),
                 (real, pSignature, ulSignatureLen, pData, pulDataLen),
                 drain_io(g_target->C_VerifyRecover, real, pSignature, ulSignatureLen))
SESSION_FN(C_DigestEncryptUpdate,
           (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart, CK_ULONG ulPartLen,
            CK_BYTE_PTR pEncryptedPart, CK_ULONG_PTR pulEncryptedPartLen),
           (real, pPart, ulPartLen, pEncryptedPart, pulEncryptedPartLen))
SESSION_FN(C_DecryptDigestUpdate,
           (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pEncryptedPart, CK_ULONG ulEncryptedPartLen,
            CK_BYTE_PTR pPart, CK_ULONG_PTR pulPartLen),
           (real, pEncryptedPart, ulEncryptedPartLen, pPart, pulPartLen))
SESSION_FN(C_SignEncryptUpdate,
           (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart, CK_ULONG ulPartLen,
            CK_BYTE_PTR pEncryptedPart, CK_ULONG_PTR pulEncryptedPartLen),
           (real, pPart, ulPartLen, pEncryptedPart, pulEncryptedPartLen))
SESSION_FN(C_DecryptVerifyUpdate,
           (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pEncryptedPart, CK_ULONG ulEncryptedPartLen,
            CK_BYTE_PTR pPart, CK_ULONG_PTR pulPartLen),
           (real, pEncryptedPart, ulEncryptedPartLen, pPart, pulPartLen))
SESSION_FN(C_GenerateKey,
           (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_ATTRIBUTE_PTR pTemplate,
            CK_ULONG ulCount, CK_OBJECT_HANDLE_PTR phKey),
           (real, pMechanism, pTemplate, ulCount, phKey))
SESSION_FN(C_GenerateKeyPair,
           (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism,
            CK_ATTRIBUTE_PTR pPublicKeyTemplate, CK_ULONG ulPublicKeyAttributeCount,
            CK_ATTRIBUTE_PTR pPrivateKeyTemplate, CK_ULONG ulPrivateKeyAttributeCount,
            CK_OBJECT_HANDLE_PTR phPublicKey, CK_OBJECT_HANDLE_PTR phPrivateKey),
           (real, pMechanism, pPublicKeyTemplate, ulPublicKeyAttributeCount, pPrivateKeyTemplate,
            ulPrivateKeyAttributeCount, phPublicKey, phPrivateKey))
SESSION_FN(C_WrapKey,
           (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism,
            CK_OBJECT_HANDLE hWrappingKey, CK_OBJECT_HANDLE hKey, CK_BYTE_PTR pWrappedKey,
            CK_ULONG_PTR pulWrappedKeyLen),
           (real, pMechanism, hWrappingKey, hKey, pWrappedKey, pulWrappedKeyLen))
SESSION_FN(C_UnwrapKey,
           (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism,
            CK_OBJECT_HANDLE hUnwrappingKey, CK_BYTE_PTR pWrappedKey, CK_ULONG ulWrappedKeyLen,
            CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulAttributeCount, CK_OBJECT_HANDLE_PTR phKey),
           (real, pMechanism, hUnwrappingKey, pWrappedKey, ulWrappedKeyLen, pTemplate,
            ulAttributeCount, phKey))
SESSION_FN(C_DeriveKey,
           (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hBaseKey,
            CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulAttributeCount, CK_OBJECT_HANDLE_PTR phKey),
           (real, pMechanism, hBaseKey, pTemplate, ulAttributeCount, phKey))
SESSION_FN(C_SeedRandom, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR pSeed, CK_ULONG ulSeedLen),
           (real, pSeed, ulSeedLen))
SESSION_FN(C_GenerateRandom,
           (CK_SESSION_HANDLE hSession, CK_BYTE_PTR RandomData, CK_ULONG ulRandomLen),
           (real, RandomData, ulRandomLen))
SESSION_FN(C_GetFunctionStatus, (CK_SESSION_HANDLE hSession), (real))
SESSION_FN(C_CancelFunction, (CK_SESSION_HANDLE hSession), (real))
PLAIN_FN(C_WaitForSlotEvent, (CK_FLAGS flags, CK_SLOT_ID_PTR pSlot, CK_VOID_PTR pRserved),
         (flags, pSlot, pRserved))

static CK_FUNCTION_LIST g_list = {
    {2, 40},
#define X(n) n,
    FN_LIST(X)
#undef X
};
