import type { Logger } from './logger';

/** JSON string literals of identities seen, up to this many (the label comes from a certificate: escape it once). */
const MAX_QUOTED_IDENTITIES = 10_000;

/** A set of session-ticket keys sent to a watcher: who, which scope and epochs, never the keys. */
export type TicketKeysRecord = {
  identity: string;
  scope: string;
  /** Epoch numbers sent, oldest..newest. */
  epochs: string;
  rpc: 'WatchTicketKeys';
};

/** A request that produced no signature (or no ticket keys: kind 'ticket keys'). */
export interface RefusalRecord {
  kind?: 'sign' | 'ticket keys';
  identity: string;
  /** The gRPC status code name: the aggregation reason. */
  outcome: string;
  key: string;
  algorithm: string;
  error: string;
  rpc: string;
}

interface RefusalCount {
  first: RefusalRecord;
  count: number;
}

/** Distinct identity × reason pairs held for one second before they are written early. */
const MAX_PENDING = 10_000;

/**
 * The audit trail. Every signature made gets one line. Refused requests, which a caller can
 * send as fast as it likes, are counted per identity, reason and second and written as one
 * line with the count and the first request as an example: a flood of garbage cannot drown the
 * lines of real signatures (journald, for one, drops lines past its rate limit).
 */
export class AuditLog {
  private refusals = new Map<string, RefusalCount>();
  private second = 0;
  /** Writes the counts when their second is over. */
  private flushTimer: NodeJS.Timeout | undefined;

  constructor(private readonly logger: Logger) {}

  private readonly quotedIdentities = new Map<string, string>();

  /**
   * A signature that was made: one line with exactly the fields identity, key, algorithm,
   * outcome "OK", latency_ms, digest_fp (first 8 bytes of the signed digest, hex), rpc and
   * request_id. Built from a template: key names, algorithm labels, rpc names and hex need no
   * escaping, and the identity's JSON literal is made once per identity.
   */
  signed(identity: string, key: string, algorithm: string, seconds: number, digestFingerprint: string, rpc: string, requestId: bigint): void {
    const latencyMs = Math.round(seconds * 1e6) / 1e3;
    this.logger.auditLine('sign', `"identity":${this.quoted(identity)},"key":"${key}","algorithm":"${algorithm}","outcome":"OK","latency_ms":${latencyMs},"digest_fp":"${digestFingerprint}","rpc":"${rpc}","request_id":"${requestId}"`);
  }

  private quoted(identity: string): string {
    let q = this.quotedIdentities.get(identity);
    if (q === undefined) {
      q = JSON.stringify(identity);
      if (this.quotedIdentities.size < MAX_QUOTED_IDENTITIES) this.quotedIdentities.set(identity, q);
    }
    return q;
  }

  ticketKeysSent(r: TicketKeysRecord): void {
    this.logger.audit('ticket keys', r);
  }

  refused(r: RefusalRecord): void {
    const second = Math.floor(Date.now() / 1000);
    if (second !== this.second || this.refusals.size >= MAX_PENDING) {
      this.flush();
      this.second = second;
    }
    if (!this.flushTimer) {
      this.flushTimer = setTimeout(() => this.flush(), (second + 1) * 1000 - Date.now() + 5);
      this.flushTimer.unref();
    }
    const id = `${r.kind ?? 'sign'}\u0000${r.identity}\u0000${r.outcome}`;
    const pending = this.refusals.get(id);
    if (pending) pending.count++;
    else this.refusals.set(id, { first: r, count: 1 });
  }

  /** Writes the counted refusals of the current second. */
  flush(): void {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    if (this.refusals.size === 0) return;
    const window = new Date(this.second * 1000).toISOString();
    for (const { first, count } of this.refusals.values()) {
      this.logger.audit(`${first.kind ?? 'sign'} refused`, {
        identity: first.identity, outcome: first.outcome, count, second: window,
        first_rpc: first.rpc, first_key: first.key, first_algorithm: first.algorithm, first_error: first.error,
      });
    }
    this.refusals = new Map();
  }

  close(): void {
    this.flush();
  }
}
