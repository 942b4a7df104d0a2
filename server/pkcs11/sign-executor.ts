import { setTimeout as sleep } from 'node:timers/promises';
import * as path from 'node:path';
import { MessageChannel, receiveMessageOnPort, Worker, type MessagePort } from 'node:worker_threads';
import { classifyCkr } from './ckr';
import { HsmBusyError, HsmDeadlineError, HsmUnavailableError } from './hsm-errors';
import type { PooledSession, SessionPool } from './session-pool';
import type { SignTask } from './sign-task';
import {
  ALGORITHM, allocateRing, ANSWERS, CANCELLED, DEADLINE, epochNow, EXPIRED, FAILED, GENERATION, HANDLE_BYTES, HEAD, HSM_MS, INPUT_LENGTH,
  LOOP_WAITING, META_INTS, OUTPUT_LENGTH, QUEUED, RAW_SIGNATURE_LENGTH, RING_SLOTS, RingView, RUNNING, SESSION_EPOCH, SESSION_FAILED, SIGNED,
  SLEEPING, SLOT_BYTES, STALE, STARTED, STATE, STOP, TAIL, TIME_FIELDS, type SignThreadInit,
} from './sign-thread-protocol';

/** The token answered the job with an error, or (stale) the job was refused unrun: its handles are from an older module generation. */
export class SignJobError extends Error {
  constructor(message: string, readonly ckr: string | undefined, readonly stale = false) {
    super(message);
    this.name = 'SignJobError';
  }
}

/**
 * An HSM call outlived pkcs11.operationTimeoutMs. Its caller is freed; `settled` resolves when
 * the stuck call finally returns, so the session it holds is never reused before then.
 */
export class SignJobTimeoutError extends Error {
  constructor(message: string, readonly settled: Promise<void>) {
    super(message);
    this.name = 'SignJobTimeoutError';
  }
}

/** Where sessions come from: the current generation's pool, or none while the HSM is down. */
export interface SessionSource {
  pool(): SessionPool | undefined;
  /** Why there is no pool. */
  unavailable(): string;
}

/** Told about every task the executor is done with (signed, failed, refused unrun). */
export interface SignTaskSink {
  taskDone(task: SignTask): void;
}

export interface SignExecutorEvents {
  threadStuck(): void;
  threadReplaced(reason: string): void;
}

export interface SignExecutorOptions {
  modulePath: string;
  threads: number;
  operationTimeoutMs: number;
  /** A queued task not run within this is refused with RESOURCE_EXHAUSTED (pkcs11.sessions.acquireTimeoutMs). */
  queueTimeoutMs: number;
  /** Tasks that may wait for a thread at once; more are refused at once (pkcs11.sessions.maxWaiting). */
  maxWaiting: number;
  /** For the queue timeout's message: the pool's size. */
  poolMax: number;
}

/** One sign thread and what the event loop knows of it. */
interface SignThread {
  worker: Worker;
  ring: RingView;
  port: MessagePort;
  /** Jobs written into the ring, and answers read from it (HEAD and TAIL as the event loop sees them). */
  posted: number;
  reaped: number;
  /** The task of each ring slot; undefined once answered or taken back. */
  slots: (SignTask | undefined)[];
  /** Tasks waiting for room in the ring, or for the thread's session. */
  backlog: SignTask[];
  /** The pooled session the thread signs with while it has work, and the pool it goes back to. */
  session: PooledSession | undefined;
  sessionPool: SessionPool | undefined;
  sessionEpoch: number;
  acquiring: boolean;
  /** A job on the current session failed in a way that condemns it: replaced once the ring is empty. */
  sessionFailed: boolean;
  /** The module is loaded (its first message). */
  ready: boolean;
  /** A call on it outlived the operation timeout: no new jobs; retired once that call returns. */
  stuck: boolean;
  /** The ring position of the stuck call, and what to resolve when it returns. */
  stuckAt: number;
  stuckReturned: (() => void) | undefined;
}

const THREAD_SCRIPT = path.join(__dirname, 'sign-thread.js');


type WaitAsync = (array: Int32Array, index: number, value: number) => { async: false; value: string } | { async: true; value: Promise<string> };
const waitAsync = (Atomics as unknown as { waitAsync: WaitAsync }).waitAsync;

/**
 * Runs sign tasks on a fixed set of threads through shared-memory rings. Each thread holds one
 * pooled session while it has work (the pool still creates, validates and discards sessions).
 * Fault model: a queued task past its deadline or the queue timeout is taken back unrun; a call
 * stuck past operationTimeoutMs quarantines its thread and session, and the thread's queued
 * tasks move to another thread; a thread whose session failed gets a fresh one before it runs
 * again; tasks from an older module generation are refused unrun.
 */
export class SignExecutor {
  private threads: SignThread[] = [];
  private sweeper: NodeJS.Timeout | undefined;
  private closed = false;
  /** Shared with the threads: the module generation jobs may use. */
  private readonly generation = new Int32Array(new SharedArrayBuffer(4));
  /** Shared with the threads: ANSWERS counts answers, LOOP_WAITING says the event loop waits on it. */
  private readonly doorbell = new Int32Array(new SharedArrayBuffer(8));
  private waitingForAnswers = false;
  /** Jobs in rings not answered yet, over all threads. */
  private outstanding = 0;
  private readonly onDoorbell = (): void => this.answersArrived();

  constructor(
    private readonly options: SignExecutorOptions,
    private readonly sessions: SessionSource,
    private readonly sink: SignTaskSink,
    private readonly events: Partial<SignExecutorEvents> = {},
  ) {}

  async start(): Promise<void> {
    await Promise.all(Array.from({ length: this.options.threads }, () => this.spawn()));
    const o = this.options;
    this.sweeper = setInterval(() => this.sweep(), Math.max(5, Math.min(50, o.operationTimeoutMs / 4, o.queueTimeoutMs / 4)));
    this.sweeper.unref();
  }

  private spawn(): Promise<void> {
    const memory = allocateRing();
    const channel = new MessageChannel();
    const init: SignThreadInit = { modulePath: this.options.modulePath, generation: this.generation, ring: memory, doorbell: this.doorbell, port: channel.port2 };
    const worker = new Worker(THREAD_SCRIPT, { workerData: init, transferList: [channel.port2] });
    const thread: SignThread = {
      worker, ring: new RingView(memory), port: channel.port1, posted: 0, reaped: 0, slots: new Array<SignTask | undefined>(RING_SLOTS).fill(undefined),
      backlog: [], session: undefined, sessionPool: undefined, sessionEpoch: 0, acquiring: false, sessionFailed: false, ready: false, stuck: false,
      stuckAt: -1, stuckReturned: undefined,
    };
    this.threads.push(thread);
    worker.on('error', (err) => this.threadFailed(thread, `sign thread crashed: ${err.message}`));
    worker.on('exit', (code) => this.threadFailed(thread, `sign thread exited with code ${code}`));
    return new Promise((resolve, reject) => {
      worker.once('message', () => {
        thread.ready = true;
        this.pump(thread);
        resolve();
      });
      worker.once('error', reject);
    });
  }

  /** Queues a task; its outcome goes to the sink. */
  submit(task: SignTask): void {
    if (this.closed) return this.refuse(task, new HsmUnavailableError('the gateway is shutting down'));
    if (this.waiting() >= this.options.maxWaiting) {
      return this.refuse(task, new HsmBusyError(`too many requests waiting for an HSM session (limit ${this.options.maxWaiting})`));
    }
    const thread = this.pickThread();
    if (!thread) return this.refuse(task, new SignJobError('no sign thread available', undefined));
    task.queuedAt = performance.now();
    thread.backlog.push(task);
    this.pump(thread);
  }

  /** Tasks queued and not yet running. */
  private waiting(): number {
    let n = 0;
    // A quarantined thread's ring holds only its stuck call and jobs already taken back.
    for (const t of this.threads) if (!t.stuck) n += t.backlog.length + Math.max(0, t.posted - t.reaped - 1);
    return n;
  }

  /** Least-loaded healthy thread, preferring threads that are ready over ones still starting. */
  private pickThread(): SignThread | undefined {
    let best: SignThread | undefined;
    let bestLoad = 0;
    for (const t of this.threads) {
      if (t.stuck) continue;
      const load = t.posted - t.reaped + t.backlog.length;
      if (!best || (t.ready && !best.ready) || (t.ready === best.ready && load < bestLoad)) {
        best = t;
        bestLoad = load;
      }
    }
    return best;
  }

  private refuse(task: SignTask, error: Error): void {
    task.error = error;
    this.sink.taskDone(task);
  }

  /** Moves backlog into the ring when the thread has a usable session; gets or gives back its session. */
  private pump(thread: SignThread): void {
    if (thread.stuck || this.closed) return;
    const ringEmpty = thread.posted === thread.reaped;
    const current = Atomics.load(this.generation, 0);
    if (thread.session && (thread.sessionFailed || thread.session.generation !== current || thread.backlog.length === 0)) {
      // A session is given back (or thrown away) only when no job of it is left in the ring.
      if (!ringEmpty) return;
      this.dropSession(thread);
    }
    if (thread.backlog.length === 0) return;
    if (!thread.session) {
      if (!thread.acquiring) this.acquireSession(thread);
      return;
    }
    const before = thread.posted;
    while (thread.backlog.length && thread.posted - thread.reaped < RING_SLOTS) this.post(thread, thread.backlog.shift() as SignTask);
    if (thread.posted === before) return;
    const control = thread.ring.control;
    Atomics.store(control, HEAD, thread.posted);
    // One wake-up per sleep: 1 → 2 says it was sent (the thread clears it when it wakes).
    if (Atomics.compareExchange(control, SLEEPING, 1, 2) === 1) Atomics.notify(control, HEAD);
    this.waitForAnswers();
  }

  private post(thread: SignThread, task: SignTask): void {
    const slot = thread.posted % RING_SLOTS;
    const { meta, times, handles, input } = thread.ring;
    const m = slot * META_INTS;
    const session = (thread.session as PooledSession).handle;
    if (session.length !== HANDLE_BYTES || task.keyHandle.length !== HANDLE_BYTES) throw new Error('PKCS#11 handles of an unexpected size');
    handles.set(session, slot * 2 * HANDLE_BYTES);
    handles.set(task.keyHandle, (slot * 2 + 1) * HANDLE_BYTES);
    if (task.data.length <= SLOT_BYTES) {
      input.set(task.data, slot * SLOT_BYTES);
      meta[m + INPUT_LENGTH] = task.data.length;
    } else {
      thread.port.postMessage(task.data);
      meta[m + INPUT_LENGTH] = -1;
    }
    meta[m + ALGORITHM] = task.algorithm;
    meta[m + GENERATION] = task.generation;
    meta[m + RAW_SIGNATURE_LENGTH] = task.rawSignatureLength;
    meta[m + SESSION_EPOCH] = thread.sessionEpoch;
    times[slot * TIME_FIELDS + DEADLINE] = performance.timeOrigin + task.deadline;
    Atomics.store(meta, m + STATE, QUEUED);
    thread.slots[slot] = task;
    thread.posted++;
    this.outstanding++;
  }

  private acquireSession(thread: SignThread): void {
    const pool = this.sessions.pool();
    if (!pool) {
      this.failBacklog(thread, new HsmUnavailableError(this.sessions.unavailable()));
      return;
    }
    thread.acquiring = true;
    pool.acquire().then(
      (session) => {
        thread.acquiring = false;
        if (thread.stuck || this.closed || !this.threads.includes(thread)) {
          pool.release(session);
          return;
        }
        thread.session = session;
        thread.sessionPool = pool;
        thread.sessionEpoch++;
        this.pump(thread);
      },
      (err: Error) => {
        thread.acquiring = false;
        this.failBacklog(thread, err);
      },
    );
  }

  /** Gives the thread's session back, or destroys it when it failed or belongs to another generation. */
  private dropSession(thread: SignThread): void {
    const { session, sessionPool } = thread;
    thread.session = undefined;
    thread.sessionPool = undefined;
    if (!session || !sessionPool) return;
    if (thread.sessionFailed || thread.stuck || session.generation !== Atomics.load(this.generation, 0)) sessionPool.destroy(session);
    else sessionPool.release(session);
    thread.sessionFailed = false;
  }

  private failBacklog(thread: SignThread, error: Error): void {
    const tasks = thread.backlog;
    thread.backlog = [];
    for (const task of tasks) this.refuse(task, error);
  }

  /** Keeps one Atomics.waitAsync on the doorbell while any job is unanswered. */
  private waitForAnswers(): void {
    while (!this.waitingForAnswers && this.outstanding > 0) {
      Atomics.store(this.doorbell, LOOP_WAITING, 1);
      const seen = Atomics.load(this.doorbell, ANSWERS);
      // Answers that came before the flag was up rang no bell: read them now.
      if (this.reapAll()) continue;
      const wait = waitAsync(this.doorbell, ANSWERS, seen);
      if (!wait.async) continue;
      this.waitingForAnswers = true;
      void wait.value.then(this.onDoorbell);
    }
    if (!this.waitingForAnswers) Atomics.store(this.doorbell, LOOP_WAITING, 0);
  }

  private answersArrived(): void {
    this.waitingForAnswers = false;
    Atomics.store(this.doorbell, LOOP_WAITING, 0);
    this.reapAll();
    this.waitForAnswers();
  }

  /** Reads every answer written so far; true if there was any. */
  private reapAll(): boolean {
    let any = false;
    for (const thread of this.threads) if (this.reap(thread)) any = true;
    return any;
  }

  private reap(thread: SignThread): boolean {
    const tail = Atomics.load(thread.ring.control, TAIL);
    if (thread.reaped === tail) return false;
    const { meta, times, output } = thread.ring;
    let handBack: SignTask[] | undefined;
    while (thread.reaped < tail) {
      const position = thread.reaped++;
      this.outstanding--;
      const slot = position % RING_SLOTS;
      const task = thread.slots[slot];
      thread.slots[slot] = undefined;
      const m = slot * META_INTS;
      const state = Atomics.load(meta, m + STATE);
      let out: Buffer | undefined;
      if (state === SIGNED || state === FAILED) {
        const length = meta[m + OUTPUT_LENGTH];
        // Oversized answers are read, used or not, so the port stays in step with the slots.
        out = length >= 0
          ? Buffer.from(output.subarray(slot * SLOT_BYTES, slot * SLOT_BYTES + length))
          : Buffer.from(receiveMessageOnPort(thread.port)?.message as Uint8Array);
      }
      if (position === thread.stuckAt) thread.stuckReturned?.();
      if (!task) continue;
      const hsmSeconds = state === SIGNED || state === FAILED ? times[slot * TIME_FIELDS + HSM_MS] / 1000 : 0;
      task.hsmSeconds = hsmSeconds;
      task.waitSeconds = Math.max(0, (performance.now() - task.queuedAt) / 1000 - hsmSeconds);
      if (state === SIGNED) {
        task.signature = out;
      } else if (state === FAILED) {
        const text = (out as Buffer).toString();
        const cut = text.indexOf('\n');
        const ckr = text.slice(0, cut) || undefined;
        task.error = new SignJobError(text.slice(cut + 1), ckr);
        if (classifyCkr(ckr) !== 'request-rejected') thread.sessionFailed = true;
      } else if (state === STALE) {
        task.error = new SignJobError('handles from before the module was re-initialized', undefined, true);
      } else if (state === EXPIRED) {
        task.error = deadlineError();
      } else if (state === SESSION_FAILED) {
        // Not run: it goes first once the thread has a fresh session.
        (handBack ??= []).push(task);
        continue;
      } else {
        task.error = new SignJobError(`sign thread left slot state ${state}`, undefined);
      }
      this.sink.taskDone(task);
    }
    if (handBack) thread.backlog = handBack.concat(thread.backlog);
    if (thread.stuck) this.retireIfReturned(thread);
    else this.pump(thread);
    return true;
  }

  /** The module generation whose handles jobs may use from now on (0: none, while the module is re-initialized). */
  useGeneration(generation: number): void {
    Atomics.store(this.generation, 0, generation);
  }

  /** Waits, at most timeoutMs, until no task is queued or running except on quarantined threads. */
  async whenIdle(timeoutMs: number): Promise<void> {
    const end = performance.now() + timeoutMs;
    const busy = (): boolean => this.threads.some((t) => !t.stuck && (t.posted !== t.reaped || t.backlog.length > 0));
    while (busy() && performance.now() < end) await sleep(5);
  }

  /** Takes back queued tasks past their deadline or the queue timeout, and quarantines stuck calls. */
  private sweep(): void {
    const now = performance.now();
    for (const thread of [...this.threads]) {
      if (thread.stuck) continue;
      this.checkStuck(thread);
      if (thread.stuck) continue;
      // Tasks waiting for a session being opened are bounded by the pool's own acquire timeout.
      const queueLimit = thread.acquiring ? Infinity : this.options.queueTimeoutMs;
      const expired = (task: SignTask): Error | undefined => {
        if (now >= task.deadline) return deadlineError();
        if (now - task.queuedAt > queueLimit) {
          return new HsmBusyError(`no HSM session became free within ${this.options.queueTimeoutMs} ms (pool max ${this.options.poolMax})`);
        }
        return undefined;
      };
      for (let p = thread.reaped; p < thread.posted; p++) {
        const task = thread.slots[p % RING_SLOTS];
        const error = task && expired(task);
        if (task && error && this.takeBack(thread, p)) this.refuse(task, error);
      }
      if (thread.backlog.length === 0) continue;
      const keep: SignTask[] = [];
      for (const task of thread.backlog) {
        const error = expired(task);
        if (error) this.refuse(task, error);
        else keep.push(task);
      }
      thread.backlog = keep;
    }
  }

  /** Takes a queued job back from the ring before the thread claims it. */
  private takeBack(thread: SignThread, position: number): boolean {
    const slot = position % RING_SLOTS;
    if (Atomics.compareExchange(thread.ring.meta, slot * META_INTS + STATE, QUEUED, CANCELLED) !== QUEUED) return false;
    thread.slots[slot] = undefined;
    return true;
  }

  private checkStuck(thread: SignThread): void {
    const position = Atomics.load(thread.ring.control, TAIL);
    if (position >= thread.posted) return;
    const slot = position % RING_SLOTS;
    const { meta, times } = thread.ring;
    if (Atomics.load(meta, slot * META_INTS + STATE) !== RUNNING) return;
    if (epochNow() - times[slot * TIME_FIELDS + STARTED] < this.options.operationTimeoutMs) return;
    this.quarantine(thread, position);
  }

  /** Frees the stuck call's caller, moves the thread's queued tasks to other threads, starts a replacement. */
  private quarantine(thread: SignThread, position: number): void {
    thread.stuck = true;
    thread.stuckAt = position;
    this.events.threadStuck?.();
    const slot = position % RING_SLOTS;
    const task = thread.slots[slot];
    thread.slots[slot] = undefined;
    const settled = new Promise<void>((resolve) => { thread.stuckReturned = resolve; });
    const moved: SignTask[] = [];
    for (let p = position + 1; p < thread.posted; p++) {
      const queued = thread.slots[p % RING_SLOTS];
      if (queued && this.takeBack(thread, p)) moved.push(queued);
    }
    moved.push(...thread.backlog);
    thread.backlog = [];
    if (!this.closed) void this.spawn().then(() => this.events.threadReplaced?.('stuck'), () => undefined);
    for (const t of moved) this.resubmit(t);
    if (task) this.refuse(task, new SignJobTimeoutError(`HSM call did not return within ${this.options.operationTimeoutMs} ms`, settled));
  }

  /** Puts a task that was never run back in line on the least-loaded thread, keeping its place in time. */
  private resubmit(task: SignTask): void {
    const thread = this.pickThread();
    if (!thread) return this.refuse(task, new SignJobError('no sign thread available', undefined));
    thread.backlog.push(task);
    this.pump(thread);
  }

  /** A quarantined thread whose stuck call returned: its session is thrown away, the thread ends. */
  private retireIfReturned(thread: SignThread): void {
    if (thread.reaped <= thread.stuckAt) return;
    this.dropSession(thread);
    this.threads = this.threads.filter((t) => t !== thread);
    this.stopThread(thread);
  }

  private stopThread(thread: SignThread): void {
    thread.worker.removeAllListeners('exit');
    Atomics.store(thread.ring.control, STOP, 1);
    Atomics.notify(thread.ring.control, HEAD);
    void thread.worker.terminate();
  }

  private threadFailed(thread: SignThread, reason: string): void {
    if (!this.threads.includes(thread)) return;
    this.threads = this.threads.filter((t) => t !== thread);
    thread.stuckReturned?.();
    for (const task of thread.slots) if (task) this.refuse(task, new SignJobError(reason, undefined));
    this.outstanding -= thread.posted - thread.reaped;
    thread.slots.fill(undefined);
    thread.sessionFailed = true;
    this.dropSession(thread);
    this.failBacklog(thread, new SignJobError(reason, undefined));
    if (!this.closed) void this.spawn().then(() => this.events.threadReplaced?.(reason), () => undefined);
  }

  /** Sign threads, and those with work right now. */
  get threadStats(): { total: number; busy: number } {
    let busy = 0;
    for (const t of this.threads) if (t.stuck || t.posted !== t.reaped) busy++;
    return { total: this.threads.length, busy };
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.sweeper) clearInterval(this.sweeper);
    const threads = this.threads;
    this.threads = [];
    for (const t of threads) {
      this.failBacklog(t, new HsmUnavailableError('the gateway is shutting down'));
      this.dropSession(t);
      this.stopThread(t);
    }
    await Promise.all(threads.map((t) => t.worker.terminate()));
  }
}

function deadlineError(): HsmDeadlineError {
  return new HsmDeadlineError('deadline passed while waiting for an HSM session; the HSM was not asked');
}
