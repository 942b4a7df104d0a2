import { setTimeout as sleep } from 'node:timers/promises';
import * as genericPool from 'generic-pool';
import type { SessionPoolConfig } from '../config/gateway-config';
import { ckrName } from './ckr';
import { HsmBusyError, HsmUnavailableError } from './hsm-errors';
import { errorMessage } from '../../common/errors';

export interface PooledSession {
  handle: Buffer;
  /** The module generation the handle belongs to. */
  generation: number;
  /** performance.now() of the last release; idle sessions are validated before reuse. */
  lastUsedAt: number;
}

export interface SessionFactory {
  open(): Buffer;
  close(handle: Buffer): void;
  alive(handle: Buffer): boolean;
}

export interface SessionPoolStats { size: number; inUse: number; idle: number; waiting: number; max: number }


/**
 * PKCS#11 sessions pooled with generic-pool. Only C_OpenSession happens in `create` (login is
 * per token and done once, outside). Creation failures back off exponentially so a dead HSM is
 * never hammered, and `create` always rejects asynchronously (a synchronous rejection makes
 * generic-pool spin at 100% CPU).
 */
export class SessionPool {
  private readonly pool: genericPool.Pool<PooledSession>;
  private createFailures = 0;
  private nextCreateAt = 0;
  private lastCreateError = '';

  constructor(
    private readonly factory: SessionFactory,
    /** The module generation the factory opens sessions in; the pool lives and dies with it. */
    readonly generation: number,
    private readonly config: SessionPoolConfig,
    backoff: { initial: number; max: number },
    onCreateError: (err: unknown) => void,
  ) {
    const create = async (): Promise<PooledSession> => {
      const wait = this.nextCreateAt - performance.now();
      if (wait > 0) await sleep(wait);
      try {
        const handle = factory.open();
        this.createFailures = 0;
        return { handle, generation, lastUsedAt: performance.now() };
      } catch (err) {
        this.createFailures++;
        this.lastCreateError = ckrName(err) ?? errorMessage(err);
        this.nextCreateAt = performance.now() + Math.min(backoff.initial * 2 ** (this.createFailures - 1), backoff.max);
        onCreateError(err);
        await sleep(0);
        throw err;
      }
    };
    this.pool = genericPool.createPool<PooledSession>({
      create,
      destroy: async (s) => { factory.close(s.handle); },
    }, {
      min: config.min,
      max: config.max,
      acquireTimeoutMillis: config.acquireTimeoutMs,
      maxWaitingClients: config.maxWaiting,
      // Validation happens in acquire(), synchronously and only for idle sessions: the pool's
      // own testOnBorrow costs an extra promise round per request.
      testOnBorrow: false,
      autostart: true,
    });
  }

  /** A session, checked with C_GetSessionInfo first when it sat idle longer than validateAfterIdleMs. */
  async acquire(): Promise<PooledSession> {
    for (;;) {
      const session = await this.acquireRaw();
      if (performance.now() - session.lastUsedAt < this.config.validateAfterIdleMs || this.factory.alive(session.handle)) return session;
      this.destroy(session);
    }
  }

  private async acquireRaw(): Promise<PooledSession> {
    try {
      return await this.pool.acquire();
    } catch (err) {
      if (err instanceof Error && err.name === 'TimeoutError' && this.createFailures > 0) {
        // generic-pool hides create() failures from acquire(): say what is really wrong.
        throw new HsmUnavailableError(`cannot open a PKCS#11 session: ${this.lastCreateError} (retrying with backoff)`);
      }
      if (err instanceof Error && err.name === 'TimeoutError') {
        throw new HsmBusyError(`no HSM session became free within ${this.config.acquireTimeoutMs} ms (pool max ${this.config.max})`);
      }
      if (err instanceof Error && /max waitingClients/.test(err.message)) {
        throw new HsmBusyError(`too many requests waiting for an HSM session (limit ${this.config.maxWaiting})`);
      }
      throw err;
    }
  }

  release(session: PooledSession): void {
    session.lastUsedAt = performance.now();
    void this.pool.release(session).catch(() => undefined);
  }

  /** Discards a session that failed or that may still be inside a stuck HSM call. */
  destroy(session: PooledSession): void {
    void this.pool.destroy(session).catch(() => undefined);
  }

  get stats(): SessionPoolStats {
    return { size: this.pool.size, inUse: this.pool.borrowed, idle: this.pool.available, waiting: this.pool.pending, max: this.pool.max };
  }

  /** Waits for borrowed sessions to come back (bounded by the caller), then closes every session. */
  async drain(timeoutMs: number): Promise<void> {
    await Promise.race([this.pool.drain(), sleep(timeoutMs)]);
    await this.pool.clear().catch(() => undefined);
  }
}
