/**
 * A sign thread: runs C_SignInit + C_Sign synchronously, off the event loop, for the jobs in its
 * ring (sign-thread-protocol.ts), in order, and sleeps on the ring when it is empty.
 *
 * pkcs11js only offers C_SignInit synchronously (60-110 us in SoftHSM), so running both calls
 * here keeps every HSM cycle off the gRPC thread. The module was initialised and logged in by
 * the main thread; this thread loads the same library (same dlopen handle, same state) and uses
 * the session and key handles it is given. It never initialises or finalizes the module.
 */
import { parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads';
import * as pkcs11js from 'pkcs11js';
import { ckrName, classifyCkr } from './ckr';
import { mechanismPlan } from './mechanisms';
import {
  ALGORITHM, ANSWERS, DEADLINE, epochNow, EXPIRED, FAILED, GENERATION, HANDLE_BYTES, HEAD, HSM_MS, INPUT_LENGTH, LOOP_WAITING,
  META_INTS, OUTPUT_LENGTH, QUEUED, RAW_SIGNATURE_LENGTH, RING_SLOTS, RingView, RUNNING, SESSION_EPOCH, SESSION_FAILED, SIGNED, SLEEPING,
  SLOT_BYTES, STALE, STARTED, STATE, STOP, TAIL, TIME_FIELDS, type SignThreadInit,
} from './sign-thread-protocol';
import { errorMessage } from '../../common/errors';

const init = workerData as SignThreadInit;
const p11 = new pkcs11js.PKCS11();
p11.load(init.modulePath);
const ring = new RingView(init.ring);
const { control, meta, times, handles, input, output } = ring;
const doorbell = init.doorbell;
const port = init.port;
/** The session epoch whose session failed: its remaining jobs are handed back unrun. */
let failedEpoch = -1;

function handle(slot: number, which: 0 | 1): Buffer {
  const at = (slot * 2 + which) * HANDLE_BYTES;
  return Buffer.from(handles.subarray(at, at + HANDLE_BYTES));
}

function writeOutput(slot: number, bytes: Uint8Array): void {
  if (bytes.length <= SLOT_BYTES) {
    output.set(bytes, slot * SLOT_BYTES);
    meta[slot * META_INTS + OUTPUT_LENGTH] = bytes.length;
  } else {
    port.postMessage(bytes);
    meta[slot * META_INTS + OUTPUT_LENGTH] = -1;
  }
}

/** Runs one slot and leaves its answer in it. */
function runSlot(slot: number): void {
  const m = slot * META_INTS;
  const t = slot * TIME_FIELDS;
  // An oversized input is always read, run or not, so the port stays in step with the slots.
  const inputLength = meta[m + INPUT_LENGTH];
  const data = inputLength >= 0 ? Buffer.from(input.buffer, slot * SLOT_BYTES, inputLength) : Buffer.from(receiveMessageOnPort(port)?.message as Uint8Array);
  const started = epochNow();
  times[t + STARTED] = started;
  // Claimed, or the event loop took it back (deadline, queue timeout, quarantine).
  if (Atomics.compareExchange(meta, m + STATE, QUEUED, RUNNING) !== QUEUED) return;
  let state = SIGNED;
  // A job queued behind a stuck call may come up after a re-initialization: its handle numbers
  // may by then name other sessions and keys.
  if (Atomics.load(init.generation, 0) !== meta[m + GENERATION]) state = STALE;
  else if (meta[m + SESSION_EPOCH] === failedEpoch) state = SESSION_FAILED;
  else if (started >= times[t + DEADLINE]) state = EXPIRED;
  if (state !== SIGNED) {
    Atomics.store(meta, m + STATE, state);
    return;
  }
  try {
    const plan = mechanismPlan(meta[m + ALGORITHM]);
    const session = handle(slot, 0);
    p11.C_SignInit(session, plan.mechanism, handle(slot, 1));
    const raw = p11.C_Sign(session, plan.input(data), Buffer.allocUnsafe(meta[m + RAW_SIGNATURE_LENGTH]));
    writeOutput(slot, plan.output(raw));
  } catch (err) {
    const ckr = ckrName(err);
    if (classifyCkr(ckr) !== 'request-rejected') failedEpoch = meta[m + SESSION_EPOCH];
    writeOutput(slot, Buffer.from(`${ckr ?? ''}\n${errorMessage(err)}`).subarray(0, SLOT_BYTES));
    state = FAILED;
  }
  times[t + HSM_MS] = epochNow() - started;
  Atomics.store(meta, m + STATE, state);
}

/** Answers held back before the event loop is woken, at most this many... */
const ANSWER_GROUP = 8;
/** ...and at most this long (estimated with the last call's duration before starting the next). */
const MAX_HOLD_MS = 1;

/** Wakes the event loop if it waits for answers (it reads every written answer whenever it wakes anyway). */
function ringDoorbell(): void {
  Atomics.add(doorbell, ANSWERS, 1);
  if (Atomics.load(doorbell, LOOP_WAITING) === 1) Atomics.notify(doorbell, ANSWERS);
}

function serve(): void {
  let tail = 0;
  let held = 0;
  let firstHeldAt = 0;
  while (Atomics.load(control, STOP) === 0) {
    if (Atomics.load(control, HEAD) === tail) {
      // Say we sleep before the last look at HEAD: a job posted after it sees the flag and wakes us.
      Atomics.store(control, SLEEPING, 1);
      if (Atomics.load(control, HEAD) === tail && Atomics.load(control, STOP) === 0) Atomics.wait(control, HEAD, tail);
      Atomics.store(control, SLEEPING, 0);
      continue;
    }
    const slot = tail % RING_SLOTS;
    runSlot(slot);
    Atomics.store(control, TAIL, ++tail);
    // Each wake-up of the event loop costs it tens of µs: with more jobs queued, answers go in
    // small groups, held no longer than about MAX_HOLD_MS. An empty ring rings at once.
    if (held++ === 0) firstHeldAt = epochNow();
    const nextCallMs = times[slot * TIME_FIELDS + HSM_MS];
    if (held >= ANSWER_GROUP || Atomics.load(control, HEAD) === tail || epochNow() - firstHeldAt + nextCallMs > MAX_HOLD_MS) {
      ringDoorbell();
      held = 0;
    }
  }
}

// "Module loaded": the event loop prefers ready threads. Jobs posted earlier just wait in the ring.
parentPort?.postMessage('ready');
serve();
