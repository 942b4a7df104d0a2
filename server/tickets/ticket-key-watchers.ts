import { status, type ServerWritableStream } from '@grpc/grpc-js';
import { TicketKey as TicketKeyMessage, TicketKeySet, type WatchTicketKeysRequest } from '../../proto/generated/hsmgateway/v1/ticket_keys';
import type { AccessPolicyHolder } from '../auth/access-policy';
import type { PeerIdentity } from '../auth/peer-identity';
import type { AuditLog } from '../observability/audit-log';
import type { Logger } from '../observability/logger';
import type { GatewayMetrics } from '../observability/metrics';
import { STATUS_NAMES, toGatewayError } from '../rpc/gateway-error';
import type { TicketKeySnapshot, TicketKeySource } from './ticket-key-source';

export type TicketKeyCall = ServerWritableStream<WatchTicketKeysRequest, TicketKeySet>;

export interface WatcherDeps {
  source: TicketKeySource;
  policy: AccessPolicyHolder;
  metrics: GatewayMetrics;
  audit: AuditLog | undefined;
  logger: Logger;
}

/** A set missing a key (HSM down at the epoch boundary) is sent again this soon, at most. */
const RETRY_MS = 5000;
/** Past the boundary, so the new epoch has begun on this clock. */
const BOUNDARY_SLACK_MS = 50;

function toMessage(snapshot: TicketKeySnapshot): TicketKeySet {
  return TicketKeySet.create({
    scope: snapshot.scope,
    epochSeconds: snapshot.epochSeconds,
    nextUpdate: BigInt(snapshot.nextUpdate),
    keys: snapshot.keys.map((k) => TicketKeyMessage.create({
      epoch: BigInt(k.epoch), name: k.name, hmacKey: k.hmacKey, aesKey: k.aesKey,
      notBefore: BigInt(k.notBefore), encryptUntil: BigInt(k.encryptUntil), decryptUntil: BigInt(k.decryptUntil),
    })),
  });
}

/** One open WatchTicketKeys stream: sends the scope's set now and at every epoch boundary. */
class TicketKeyWatcher {
  private timer: NodeJS.Timeout | undefined;
  private sent = 0;
  private ended = false;

  constructor(
    private readonly call: TicketKeyCall,
    readonly identity: PeerIdentity,
    readonly scope: string,
    private readonly deps: WatcherDeps,
    private readonly onEnd: (watcher: TicketKeyWatcher) => void,
  ) {}

  send(): void {
    if (this.ended) return;
    let snapshot: TicketKeySnapshot;
    try {
      snapshot = this.deps.source.snapshot(this.scope, Math.floor(Date.now() / 1000));
    } catch (err) {
      const e = toGatewayError(err);
      this.deps.metrics.ticketKeyFetch(this.scope, STATUS_NAMES[e.code] ?? String(e.code));
      this.deps.logger.warn('ticket keys unavailable', { scope: this.scope, identity: this.identity.label, error: e.message });
      // A watcher already holding keys keeps them and is sent a set again once the HSM answers.
      if (this.sent === 0) this.end(e.code, e.message);
      else this.schedule(RETRY_MS);
      return;
    }
    this.call.write(toMessage(snapshot));
    this.sent++;
    const epochs = snapshot.keys.map((k) => k.epoch);
    this.deps.audit?.ticketKeysSent({ identity: this.identity.label, scope: this.scope, epochs: `${Math.min(...epochs)}..${Math.max(...epochs)}`, rpc: 'WatchTicketKeys' });
    this.deps.metrics.ticketKeyFetch(this.scope, 'OK');
    const untilBoundary = snapshot.nextUpdate * 1000 - Date.now() + BOUNDARY_SLACK_MS;
    this.schedule(snapshot.complete ? untilBoundary : Math.min(RETRY_MS, untilBoundary));
  }

  private schedule(ms: number): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.send(), Math.max(ms, 0));
  }

  /** Ends the stream with a status (OK ends it normally). */
  end(code: status, details: string): void {
    if (this.ended) return;
    this.closed();
    if (code === status.OK) this.call.end();
    else this.call.emit('error', { code, details });
  }

  /** The stream is over (ended here, or cancelled by the client). */
  closed(): void {
    if (this.ended) return;
    this.ended = true;
    clearTimeout(this.timer);
    this.onEnd(this);
  }
}

/** The open WatchTicketKeys streams. */
export class TicketKeyWatchers {
  private readonly watchers = new Set<TicketKeyWatcher>();

  constructor(private readonly deps: WatcherDeps) {}

  get size(): number {
    return this.watchers.size;
  }

  open(call: TicketKeyCall, identity: PeerIdentity, scope: string): void {
    const watcher = new TicketKeyWatcher(call, identity, scope, this.deps, (w) => this.watchers.delete(w));
    this.watchers.add(watcher);
    call.on('cancelled', () => watcher.closed());
    call.on('close', () => watcher.closed());
    watcher.send();
  }

  /** After a policy reload: streams whose identity lost the scope end with PERMISSION_DENIED. */
  revokeUngranted(): void {
    const authorizer = this.deps.policy.current.authorizer;
    for (const watcher of [...this.watchers]) {
      if (authorizer.ticketScopeAllowed(watcher.identity, watcher.scope)) continue;
      this.deps.logger.info('ticket key stream ended: its scope is no longer granted', { identity: watcher.identity.label, scope: watcher.scope });
      watcher.end(status.PERMISSION_DENIED, `identity "${watcher.identity.label}" may no longer watch ticket keys of scope "${watcher.scope}"`);
    }
  }

  /** Shutdown: every stream ends normally; clients reconnect to another gateway. */
  closeAll(): void {
    for (const watcher of [...this.watchers]) watcher.end(status.OK, 'gateway stopping');
  }
}
