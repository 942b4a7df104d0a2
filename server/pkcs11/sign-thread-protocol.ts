/**
 * Shared memory between the event loop and one sign thread: a ring of preallocated job slots.
 *
 * The event loop (one producer) fills slot `posted % RING_SLOTS` and advances HEAD; the thread
 * (one consumer) runs slots in order, writes each answer into the job's own slot and advances
 * TAIL. Nothing is posted per job: the thread sleeps on HEAD with Atomics.wait and is woken only
 * when it said it sleeps; the event loop waits for answers of every thread on one doorbell word
 * with one Atomics.waitAsync, and threads ring it only while it waits. Digests and signatures
 * larger than a slot go over the thread's MessagePort, read synchronously on the other side.
 */

export const RING_SLOTS = 64;
/** Digest (or EdDSA message) and signature bytes a slot holds; larger ones go over the port. */
export const SLOT_BYTES = 512;
/** pkcs11js handles are CK_ULONG buffers: 8 bytes on the 64-bit platforms we run on. */
export const HANDLE_BYTES = 8;

/** Control words of a ring (Int32). */
export const HEAD = 0;
export const TAIL = 1;
/** 0 awake, 1 asleep (or about to be), 2 asleep and already woken. */
export const SLEEPING = 2;
export const STOP = 3;
const CONTROL_WORDS = 4;

/** Doorbell words (Int32), one doorbell for all threads. */
export const ANSWERS = 0;
export const LOOP_WAITING = 1;

/** Int32 fields of a slot. */
export const STATE = 0;
export const ALGORITHM = 1;
export const GENERATION = 2;
/** Bytes of input in the slot, or -1: the input comes over the port. */
export const INPUT_LENGTH = 3;
export const RAW_SIGNATURE_LENGTH = 4;
/** Bytes of output (signature, or "ckr\nmessage") in the slot, or -1: it comes over the port. */
export const OUTPUT_LENGTH = 5;
/** Which session of its thread the job was given: a job of a session that failed is not run. */
export const SESSION_EPOCH = 6;
export const META_INTS = 8;

/** Float64 fields of a slot; times are epoch milliseconds (performance.timeOrigin + now()), the same clock on every thread. */
export const DEADLINE = 0;
export const STARTED = 1;
export const HSM_MS = 2;
export const TIME_FIELDS = 4;

/** Slot states. A QUEUED slot can be taken back by the event loop (CANCELLED) until the thread claims it (RUNNING). */
export const QUEUED = 1;
export const RUNNING = 2;
export const SIGNED = 3;
export const FAILED = 4;
export const CANCELLED = 5;
/** Refused unrun: its handles are from another module generation. */
export const STALE = 6;
/** Refused unrun: its deadline had passed when the thread reached it. */
export const EXPIRED = 7;
/** Not run: an earlier job on the same session failed in a way that condemns the session. */
export const SESSION_FAILED = 8;

export interface RingMemory {
  control: SharedArrayBuffer;
  meta: SharedArrayBuffer;
  times: SharedArrayBuffer;
  handles: SharedArrayBuffer;
  input: SharedArrayBuffer;
  output: SharedArrayBuffer;
}

export function allocateRing(): RingMemory {
  return {
    control: new SharedArrayBuffer(CONTROL_WORDS * 4),
    meta: new SharedArrayBuffer(RING_SLOTS * META_INTS * 4),
    times: new SharedArrayBuffer(RING_SLOTS * TIME_FIELDS * 8),
    handles: new SharedArrayBuffer(RING_SLOTS * 2 * HANDLE_BYTES),
    input: new SharedArrayBuffer(RING_SLOTS * SLOT_BYTES),
    output: new SharedArrayBuffer(RING_SLOTS * SLOT_BYTES),
  };
}

/** Typed views of a ring, the same on both sides. */
export class RingView {
  readonly control: Int32Array;
  readonly meta: Int32Array;
  readonly times: Float64Array;
  readonly handles: Uint8Array;
  readonly input: Uint8Array;
  readonly output: Uint8Array;

  constructor(memory: RingMemory) {
    this.control = new Int32Array(memory.control);
    this.meta = new Int32Array(memory.meta);
    this.times = new Float64Array(memory.times);
    this.handles = new Uint8Array(memory.handles);
    this.input = new Uint8Array(memory.input);
    this.output = new Uint8Array(memory.output);
  }
}

export interface SignThreadInit {
  modulePath: string;
  /** [0]: the module generation jobs may use; a job of another one is refused unrun. 0 while re-initializing. */
  generation: Int32Array;
  ring: RingMemory;
  doorbell: Int32Array;
  /** Oversized inputs and outputs, in slot order. */
  port: import('node:worker_threads').MessagePort;
}

/** The epoch-millisecond clock both sides compare deadlines and start times with. */
export const epochNow = (): number => performance.timeOrigin + performance.now();
