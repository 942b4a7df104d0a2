import { setTimeout as sleep } from 'node:timers/promises';
import type { KeyConfig, Pkcs11Config } from '../config/gateway-config';
import { ckrName, classifyCkr, isPinRejected } from './ckr';
import { HsmBusyError, HsmDeadlineError, HsmOperationError, HsmRejectedError, HsmUnavailableError } from './hsm-errors';
import { HsmModule } from './hsm-module';
import { refreshCertificateChains, resolveKeys, type KeyWarning, type ResolvedKey } from './key-store';
import { SessionPool, type SessionPoolStats } from './session-pool';
import { SignExecutor, SignJobError, SignJobTimeoutError, type SignTaskSink } from './sign-executor';
import type { SignTask } from './sign-task';
import { errorMessage } from '../../common/errors';

export type HsmState = 'starting' | 'ready' | 'unavailable' | 'closed';

/** What the HSM layer reports; the observability layer turns it into metrics and logs. */
export interface HsmObserver {
  stateChanged(state: HsmState, reason: string): void;
  hsmError(ckr: string): void;
  reconnectAttempt(ok: boolean, error?: string): void;
  loginAttempt(ok: boolean, error?: string): void;
  sessionDiscarded(reason: 'session-lost' | 'timeout' | 'error'): void;
  /** A sign thread was started in place of one that hung ('stuck') or died (why). */
  signThreadReplaced(reason: string): void;
  keyWarning(warning: KeyWarning): void;
}


/**
 * The HSM as the rest of the gateway sees it: named keys and a `sign` call. It owns the module
 * lifecycle (initialise, login once, reconnect with backoff), the session pool and the sign
 * threads, and turns PKCS#11 failures into the Hsm*Error classes.
 */
export class Hsm implements SignTaskSink {
  private module: HsmModule;
  private controlSession: Buffer | undefined;
  private pool: SessionPool | undefined;
  private readonly executor: SignExecutor;
  private keyMap = new Map<string, ResolvedKey>();
  private currentState: HsmState = 'starting';
  private healthTimer: NodeJS.Timeout | undefined;
  private certificateTimer: NodeJS.Timeout | undefined;
  private reconnecting: Promise<void> | undefined;
  private nextLoginAt = 0;
  private loginBackoffMs: number;
  /** Set when the token refused the PIN: retrying could lock it, so only an operator fixes this. */
  private pinRejected = false;

  constructor(
    private readonly config: Pkcs11Config,
    private keyConfigs: KeyConfig[],
    private readonly pin: string,
    private readonly observer: HsmObserver,
  ) {
    this.module = new HsmModule(config.module);
    this.loginBackoffMs = config.reconnectBackoffMs.initial;
    this.executor = new SignExecutor(
      {
        modulePath: config.module, threads: config.signThreads, operationTimeoutMs: config.operationTimeoutMs,
        queueTimeoutMs: config.sessions.acquireTimeoutMs, maxWaiting: config.sessions.maxWaiting, poolMax: config.sessions.max,
      },
      { pool: () => (this.ready ? this.pool : undefined), unavailable: () => `HSM unavailable (${this.currentState})` },
      this,
      { threadStuck: () => this.observer.sessionDiscarded('timeout'), threadReplaced: (reason) => this.observer.signThreadReplaced(reason) },
    );
  }

  get state(): HsmState {
    return this.currentState;
  }

  get ready(): boolean {
    return this.currentState === 'ready';
  }

  key(name: string): ResolvedKey | undefined {
    return this.keyMap.get(name);
  }

  keys(): ResolvedKey[] {
    return [...this.keyMap.values()];
  }

  get poolStats(): SessionPoolStats {
    return this.pool?.stats ?? { size: 0, inUse: 0, idle: 0, waiting: 0, max: this.config.sessions.max };
  }

  /** Sign threads, and those with work right now. */
  get signThreads(): { total: number; busy: number } {
    return this.executor.threadStats;
  }

  /** Connects once; a failure here is fatal (wrong module, token, PIN or key names). */
  async start(): Promise<void> {
    try {
      this.connect();
    } catch (err) {
      this.module.finalize();
      throw err;
    }
    await this.executor.start();
    this.executor.useGeneration(this.module.generation);
    this.setState('ready', 'started');
    this.healthTimer = setInterval(() => this.checkHealth(), this.config.healthCheckIntervalMs);
    this.healthTimer.unref();
    this.certificateTimer = setInterval(() => {
      try {
        this.refreshCertificates();
      } catch {
        // A failing token shows up in the health check; the old chains stay in place.
      }
    }, this.config.certificateRefreshMs);
    this.certificateTimer.unref();
  }

  private connect(): void {
    this.module.load();
    this.module.initialize();
    this.module.selectToken(this.config.token);
    const control = this.module.openSession();
    try {
      this.module.login(control, this.pin);
    } catch (err) {
      this.module.closeSession(control);
      if (isPinRejected(ckrName(err))) this.pinRejected = true;
      throw err;
    }
    this.controlSession = control;
    const { keys, warnings } = resolveKeys(this.module, control, this.keyConfigs, this.config.allowExtractableKeys);
    for (const w of warnings) this.observer.keyWarning(w);
    this.keyMap = keys;
    const module = this.module;
    const generation = module.generation;
    // A session of an older generation is never closed: its number may name a new session by now.
    const ours = (): boolean => module.generation === generation;
    this.pool = new SessionPool(
      { open: () => module.openSession(), close: (h) => { if (ours()) module.closeSession(h); }, alive: (h) => ours() && module.sessionAlive(h) },
      generation,
      this.config.sessions,
      this.config.reconnectBackoffMs,
      (err) => this.onFailure(ckrName(err), 'C_OpenSession'),
    );
  }

  /** Re-reads certificate chains from the token (SIGHUP, or a periodic refresh). */
  refreshCertificates(): void {
    if (this.controlSession && this.ready) refreshCertificateChains(this.module, this.controlSession, this.keyMap);
  }

  /**
   * Resolves a new key list (names, aliases) and swaps it in whole, or throws and changes
   * nothing. Requests already holding a key keep using it.
   */
  reloadKeys(keyConfigs: KeyConfig[]): void {
    if (!this.controlSession || !this.ready) throw new Error(`cannot reload keys while the HSM is ${this.currentState}`);
    const { keys, warnings } = resolveKeys(this.module, this.controlSession, keyConfigs, this.config.allowExtractableKeys);
    for (const w of warnings) this.observer.keyWarning(w);
    this.keyMap = keys;
    this.keyConfigs = keyConfigs;
  }

  /**
   * Runs `fn` on the control session, on this thread: for rare, quick operations such as
   * ticket-key derivation, never for the sign path. `generation` changes when the module
   * reconnects; handles found under an older generation are stale. A PKCS#11 failure is
   * handled like one on the sign path (reconnect, re-login) and thrown as an Hsm*Error.
   */
  withControlSession<T>(fn: (module: HsmModule, session: Buffer, generation: number) => T): T {
    if (!this.ready || !this.controlSession) throw new HsmUnavailableError(`HSM unavailable (${this.currentState})`);
    try {
      return fn(this.module, this.controlSession, this.module.generation);
    } catch (err) {
      const ckr = ckrName(err);
      if (ckr === undefined) throw err;
      this.onFailure(ckr, 'control session');
      if (classifyCkr(ckr) === 'login-lost') void this.relogin();
      throw this.toHsmError(err);
    }
  }

  /**
   * Signs with the task's key, algorithm and data; the outcome comes back through
   * `task.finished()` with `signature` or an Hsm*Error set. A session lost under the task is
   * retried once on a fresh one, a lost login once after a re-login.
   */
  sign(task: SignTask): void {
    task.attempt = 0;
    this.attempt(task);
  }

  private attempt(task: SignTask): void {
    if (!this.ready || !this.pool) return this.finish(task, new HsmUnavailableError(`HSM unavailable (${this.currentState})`));
    const generation = this.module.generation;
    // A key resolved before a reconnect is looked up again by name: its old handle may now name another key.
    const key = task.key.generation === generation ? task.key : this.keyMap.get(task.key.name);
    if (!key || key.generation !== generation) return this.finish(task, new HsmUnavailableError(`key "${task.key.name}" is not available since the HSM reconnected`));
    task.generation = generation;
    task.keyHandle = key.handle;
    task.rawSignatureLength = key.rawSignatureLength;
    this.executor.submit(task);
  }

  /** From the executor: done with the task, signed or not. */
  taskDone(task: SignTask): void {
    const err = task.error;
    if (!err) return task.finished();
    if (this.shouldRetry(err, task.attempt)) {
      task.attempt++;
      task.error = undefined;
      return this.attempt(task);
    }
    this.finish(task, this.toHsmError(err));
  }

  private finish(task: SignTask, error: Error): void {
    task.error = error;
    task.finished();
  }

  /** Decides what a failed sign means for the token; true to retry once. The executor already dealt with the session. */
  private shouldRetry(err: Error, attempt: number): boolean {
    if (!(err instanceof SignJobError)) return false;
    if (err.stale) return attempt === 0;
    const kind = classifyCkr(err.ckr);
    if (kind === 'request-rejected') {
      if (err.ckr) this.observer.hsmError(err.ckr);
      return false;
    }
    this.observer.sessionDiscarded(kind === 'session-lost' ? 'session-lost' : 'error');
    this.onFailure(err.ckr, 'C_Sign');
    if (attempt > 0) return false;
    if (kind === 'session-lost') return true;
    if (kind === 'login-lost') return this.relogin();
    return false;
  }

  private toHsmError(err: unknown): Error {
    if (err instanceof HsmBusyError || err instanceof HsmDeadlineError || err instanceof HsmUnavailableError) return err;
    if (err instanceof SignJobTimeoutError) return new HsmUnavailableError(err.message);
    const ckr = err instanceof SignJobError ? err.ckr : ckrName(err);
    const kind = classifyCkr(ckr);
    if (kind === 'request-rejected' && ckr) return new HsmRejectedError(`the token rejected the request: ${ckr}`, ckr);
    if (kind === 'device-down' || kind === 'login-lost' || kind === 'session-lost' || kind === 'key-lost') {
      return new HsmUnavailableError(`HSM unavailable: ${ckr}`, ckr);
    }
    return new HsmOperationError(`HSM operation failed: ${ckr ?? errorMessage(err)}`, ckr);
  }

  /** Records a PKCS#11 failure and reacts to what it says about the token. */
  private onFailure(ckr: string | undefined, where: string): void {
    if (ckr) this.observer.hsmError(ckr);
    const kind = classifyCkr(ckr);
    if (kind === 'device-down' || kind === 'key-lost') this.startReconnect(`${where}: ${ckr}`);
  }

  /** One login attempt per backoff interval, so a stale PIN can never lock the token. */
  private relogin(): boolean {
    if (this.pinRejected || !this.controlSession) return false;
    const now = performance.now();
    if (now < this.nextLoginAt) return false;
    this.nextLoginAt = now + this.loginBackoffMs;
    try {
      this.module.login(this.controlSession, this.pin);
      this.observer.loginAttempt(true);
      this.loginBackoffMs = this.config.reconnectBackoffMs.initial;
      return true;
    } catch (err) {
      const message = errorMessage(err);
      this.observer.loginAttempt(false, message);
      this.loginBackoffMs = Math.min(this.loginBackoffMs * 2, this.config.reconnectBackoffMs.max);
      if (isPinRejected(ckrName(err))) {
        this.pinRejected = true;
        this.setState('unavailable', `${message}; not retrying so the PIN cannot be locked: fix the PIN and restart`);
      } else {
        this.onFailure(ckrName(err), 'C_Login');
      }
      return false;
    }
  }

  private checkHealth(): void {
    if (this.currentState !== 'ready' || !this.controlSession) return;
    try {
      if (!this.module.isLoggedIn(this.controlSession)) void this.relogin();
    } catch (err) {
      const ckr = ckrName(err);
      if (ckr) this.observer.hsmError(ckr);
      const kind = classifyCkr(ckr);
      // A lost control session also drops our view of the login: rebuild everything.
      if (kind === 'device-down' || kind === 'session-lost' || kind === 'key-lost' || ckr === undefined) this.startReconnect(`health check: ${ckr ?? errorMessage(err)}`);
    }
  }

  private setState(state: HsmState, reason: string): void {
    if (this.currentState === state || this.currentState === 'closed') return;
    this.currentState = state;
    this.observer.stateChanged(state, reason);
  }

  private startReconnect(reason: string): void {
    if (this.reconnecting || this.currentState === 'closed' || this.pinRejected) return;
    this.setState('unavailable', reason);
    this.reconnecting = this.reconnectLoop().finally(() => { this.reconnecting = undefined; });
  }

  /**
   * Tears the module down and brings it back, with exponential backoff, until it works. Calls
   * already running use this generation's handles: they return, and its sessions are closed,
   * before the module is finalized (a stuck call is given up on after operationTimeoutMs).
   */
  private async reconnectLoop(): Promise<void> {
    let delay = this.config.reconnectBackoffMs.initial;
    const oldPool = this.pool;
    this.pool = undefined;
    await this.executor.whenIdle(this.config.operationTimeoutMs);
    if (oldPool) await oldPool.drain(1000);
    for (;;) {
      await sleep(delay);
      if (this.currentState === 'closed') return;
      try {
        this.controlSession = undefined;
        this.executor.useGeneration(0);
        this.module.finalize();
        this.connect();
        this.executor.useGeneration(this.module.generation);
        this.observer.reconnectAttempt(true);
        this.setState('ready', 'reconnected');
        return;
      } catch (err) {
        this.observer.reconnectAttempt(false, errorMessage(err));
        if (this.pinRejected) {
          this.setState('unavailable', `${errorMessage(err)}; not retrying so the PIN cannot be locked`);
          return;
        }
        delay = Math.min(delay * 2, this.config.reconnectBackoffMs.max);
      }
    }
  }

  /** Returns sessions, logs out, finalizes the module. */
  async close(graceMs: number): Promise<void> {
    this.setState('closed', 'shutdown');
    this.currentState = 'closed';
    if (this.healthTimer) clearInterval(this.healthTimer);
    if (this.certificateTimer) clearInterval(this.certificateTimer);
    await this.reconnecting?.catch(() => undefined);
    if (this.pool) await this.pool.drain(graceMs);
    await this.executor.close();
    if (this.controlSession) this.module.closeSession(this.controlSession);
    this.module.finalize();
  }
}
