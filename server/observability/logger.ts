import { writeSync } from 'node:fs';
import type { LogLevel } from '../config/gateway-config';

const LEVELS: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export type LogFields = Record<string, string | number | boolean | undefined | null>;

/**
 * Structured JSON lines on stdout. Lines are buffered and written once per event-loop turn, so
 * an audit line per signature costs a string build, not a syscall. Never pass a PIN or key
 * material in fields.
 */
export class Logger {
  private buffer: string[] = [];
  private flushScheduled = false;
  private readonly threshold: number;

  constructor(level: LogLevel = 'info', private readonly fd = 1) {
    this.threshold = LEVELS[level];
    process.once('exit', () => this.flush());
  }

  private emit(level: LogLevel | 'audit', msg: string, fields?: LogFields): void {
    const line = JSON.stringify({ ts: new Date().toISOString(), level, msg, ...fields });
    this.buffer.push(line);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  flush(): void {
    this.flushScheduled = false;
    if (this.buffer.length === 0) return;
    const text = this.buffer.join('\n') + '\n';
    this.buffer = [];
    try {
      writeSync(this.fd, text);
    } catch {
      // stdout closed (e.g. the log collector went away): dropping logs must not stop signing.
    }
  }

  debug(msg: string, fields?: LogFields): void { if (this.threshold <= LEVELS.debug) this.emit('debug', msg, fields); }
  info(msg: string, fields?: LogFields): void { if (this.threshold <= LEVELS.info) this.emit('info', msg, fields); }
  warn(msg: string, fields?: LogFields): void { if (this.threshold <= LEVELS.warn) this.emit('warn', msg, fields); }
  error(msg: string, fields?: LogFields): void { this.emit('error', msg, fields); }
  /** Audit lines are written whatever the level. */
  audit(msg: string, fields: LogFields): void { this.emit('audit', msg, fields); }
}
