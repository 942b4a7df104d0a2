import { writeSync } from 'node:fs';
import type { LogLevel } from '../config/gateway-config';

const LEVELS: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export type LogFields = Record<string, string | number | boolean | undefined | null>;

/** What happens to lines on their way out; the metrics count it. */
export interface LogWriteObserver {
  /** The output would not take more now (EAGAIN) or took part of a write: the rest is retried later. */
  writesDeferred(count: number): void;
  /** Lines given up on: the queue was full, or the output failed for good (EPIPE, EBADF). */
  linesDropped(lines: number, auditLines: number): void;
}

export interface LoggerOptions {
  /** Lines waiting for a slow output, in bytes; beyond it new lines are dropped and counted. */
  maxQueuedBytes?: number;
}

interface Line {
  text: string;
  audit: boolean;
}

/** Delay before writing again to an output that said EAGAIN. */
const RETRY_MS = 10;
/** At exit nothing can wait for a timer: retry a full output this long, then count what is left. */
const EXIT_RETRY_MS = 2000;

const sleepSync = (ms: number): void => { Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms); };

/**
 * Structured JSON lines on stdout. Lines are queued and written once per event-loop turn, so
 * an audit line per signature costs a string build, not a syscall. A write that the output
 * takes only in part, or refuses for now (a non-blocking pipe that is full), is finished later
 * from the queue; lines are only given up when the queue is full or the output is gone, and then
 * they are counted (LogWriteObserver), never dropped silently. Never pass a PIN or key material
 * in fields.
 */
export class Logger {
  private queue: Line[] = [];
  private queuedBytes = 0;
  /** Bytes of queue[0] already written by a partial write. */
  private writtenOfFirst = 0;
  private flushScheduled = false;
  private retryTimer: NodeJS.Timeout | undefined;
  private readonly threshold: number;
  private readonly maxQueuedBytes: number;
  private observer: LogWriteObserver | undefined;
  private unreported = { deferred: 0, lines: 0, auditLines: 0 };
  private stampedAt = 0;
  private stamp = '';

  constructor(level: LogLevel = 'info', private readonly fd = 1, options: LoggerOptions = {}) {
    this.threshold = LEVELS[level];
    this.maxQueuedBytes = options.maxQueuedBytes ?? 64 * 1024 * 1024;
    process.once('exit', () => this.flushAtExit());
  }

  /** Where write retries and lost lines are reported (the metrics, once they exist). */
  observe(observer: LogWriteObserver): void {
    this.observer = observer;
    const { deferred, lines, auditLines } = this.unreported;
    if (deferred) observer.writesDeferred(deferred);
    if (lines) observer.linesDropped(lines, auditLines);
    this.unreported = { deferred: 0, lines: 0, auditLines: 0 };
  }

  private emit(level: LogLevel | 'audit', msg: string, fields?: LogFields): void {
    this.enqueue(`${JSON.stringify({ ts: this.timestamp(), level, msg, ...fields })}\n`, level === 'audit');
  }

  /** The ISO timestamp, formatted once per millisecond (an audit line per signature asks for it thousands of times a second). */
  private timestamp(): string {
    const now = Date.now();
    if (now !== this.stampedAt) {
      this.stampedAt = now;
      this.stamp = new Date(now).toISOString();
    }
    return this.stamp;
  }

  private enqueue(text: string, audit: boolean): void {
    if (this.queuedBytes + text.length > this.maxQueuedBytes) {
      this.dropped(1, audit ? 1 : 0);
      return;
    }
    this.queue.push({ text, audit });
    this.queuedBytes += text.length;
    if (!this.flushScheduled && !this.retryTimer) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  /** Writes as much of the queue as the output takes now; schedules a retry for the rest. */
  flush(): void {
    this.flushScheduled = false;
    if (this.queue.length === 0) return;
    const data = Buffer.from(this.queue.map((l) => l.text).join(''));
    let offset = this.writtenOfFirst;
    try {
      while (offset < data.length) offset += writeSync(this.fd, data, offset, data.length - offset);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') {
        // The output is gone (collector exited, fd closed): signing goes on, the loss is counted.
        this.discardQueue();
        return;
      }
    }
    if (offset === data.length) {
      this.clearQueue();
      return;
    }
    this.consume(offset);
    this.deferRetry();
  }

  /** Drops the lines fully written among the first `bytes` of the queue; remembers a partly written one. */
  private consume(bytes: number): void {
    let left = bytes;
    let done = 0;
    for (const line of this.queue) {
      const size = Buffer.byteLength(line.text);
      if (left < size) break;
      left -= size;
      this.queuedBytes -= line.text.length;
      done++;
    }
    this.queue = done === this.queue.length ? [] : this.queue.slice(done);
    this.writtenOfFirst = left;
  }

  private deferRetry(): void {
    if (this.observer) this.observer.writesDeferred(1);
    else this.unreported.deferred++;
    if (this.retryTimer) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.flush();
    }, RETRY_MS);
  }

  private discardQueue(): void {
    this.dropped(this.queue.length, this.queue.filter((l) => l.audit).length);
    this.clearQueue();
  }

  private clearQueue(): void {
    this.queue = [];
    this.queuedBytes = 0;
    this.writtenOfFirst = 0;
  }

  private dropped(lines: number, auditLines: number): void {
    if (this.observer) {
      this.observer.linesDropped(lines, auditLines);
    } else {
      this.unreported.lines += lines;
      this.unreported.auditLines += auditLines;
    }
  }

  /** On exit: keep trying a full output for a while, then say on stderr how many lines were lost. */
  private flushAtExit(): void {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    const giveUpAt = Date.now() + EXIT_RETRY_MS;
    this.flush();
    while (this.queue.length && Date.now() < giveUpAt) {
      sleepSync(RETRY_MS);
      this.flush();
    }
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.queue.length) {
      const audit = this.queue.filter((l) => l.audit).length;
      try {
        writeSync(2, `hsm-gateway: ${this.queue.length} log lines (${audit} audit) could not be written to stdout before exit\n`);
      } catch {
        // stderr is gone too: nothing left to tell.
      }
    }
  }

  debug(msg: string, fields?: LogFields): void { if (this.threshold <= LEVELS.debug) this.emit('debug', msg, fields); }
  info(msg: string, fields?: LogFields): void { if (this.threshold <= LEVELS.info) this.emit('info', msg, fields); }
  warn(msg: string, fields?: LogFields): void { if (this.threshold <= LEVELS.warn) this.emit('warn', msg, fields); }
  error(msg: string, fields?: LogFields): void { this.emit('error', msg, fields); }
  /** Audit lines are written whatever the level. */
  audit(msg: string, fields: LogFields): void { this.emit('audit', msg, fields); }
  /**
   * An audit line whose fields the caller already wrote as JSON members (`"a":1,"b":"x"`, valid
   * JSON, nothing to escape left): the same line as audit(msg, fields), without JSON.stringify.
   */
  auditLine(msg: string, jsonMembers: string): void {
    this.enqueue(`{"ts":"${this.timestamp()}","level":"audit","msg":"${msg}",${jsonMembers}}\n`, true);
  }
}
