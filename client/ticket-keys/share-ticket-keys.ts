import { createHash } from 'node:crypto';
import type * as tls from 'node:tls';
import type { Registry } from 'prom-client';
import { TicketKeyMetrics } from './ticket-key-metrics';
import { TicketKeyRing } from './ticket-key-ring';
import type { TicketKeyListener, TicketKeySetView, TicketKeyStream } from './ticket-key-stream';
import type { TicketRingStats } from './ticket-ring-addon';

export interface ShareTicketKeysOptions {
  /** The scope the gateway grants this client: a group of hostnames that resume each other's sessions. */
  scope: string;
  /** How long to wait for the first key set, ms (default 10 000). */
  timeoutMs?: number;
}

export interface TicketKeySharingStats extends TicketRingStats {
  resumedHandshakes: number;
  fullHandshakes: number;
  keyUpdates: number;
}

/** A server sharing its scope's ticket keys; close() gives it its own key back. */
export interface TicketKeySharing {
  readonly scope: string;
  /** Handshakes resumed vs full, ticket outcomes, key updates (prom-client). */
  readonly metrics: Registry;
  stats(): TicketKeySharingStats;
  close(): Promise<void>;
}

/** A tls.Server, https.Server or http2 secure server. */
export type TicketKeyServer = tls.Server;

/**
 * Node's default session ID context hashes process.argv, so two processes refuse each other's
 * sessions even with the same ticket key: every server of a scope uses this one instead.
 */
export function sessionIdContextFor(scope: string): string {
  // 32 hex characters: OpenSSL's limit is 32 bytes, and Node's own default has this form.
  return createHash('sha256').update('hsmgw-ticket-sid-ctx\u0000').update(scope).digest('hex').slice(0, 32);
}

/** Installs the scope's keys on `server` and keeps them current as the gateway rotates them. */
export async function shareTicketKeys(
  openStream: (scope: string, listener: TicketKeyListener, timeoutMs: number) => TicketKeyStream,
  server: TicketKeyServer,
  options: ShareTicketKeysOptions,
): Promise<TicketKeySharing> {
  const { scope } = options;
  const ring = new TicketKeyRing();
  const metrics = new TicketKeyMetrics(scope, () => ring.stats());
  const counts = { resumedHandshakes: 0, fullHandshakes: 0, keyUpdates: 0 };
  const apply = (set: TicketKeySetView): void => {
    ring.setKeys(set.keys);
    counts.keyUpdates++;
    metrics.keysUpdated();
  };
  const stream = openStream(scope, {
    update: apply,
    // The keys held keep serving until their windows end; the ring stops using them then.
    refused: () => undefined,
  }, options.timeoutMs ?? 10_000);
  try {
    await stream.first();
  } catch (err) {
    ring.destroy();
    throw err;
  }
  const sessionIdContext = sessionIdContextFor(scope);
  const ownContext = (server as { sessionIdContext?: unknown }).sessionIdContext;
  const restoreContext = typeof ownContext === 'string' ? ownContext : undefined;
  ring.installOn(server, sessionIdContext);

  // setSecureContext() replaces the SSL_CTX (new certificate): install on the new one.
  const ownSetSecureContext = Object.prototype.hasOwnProperty.call(server, 'setSecureContext') ? server.setSecureContext : undefined;
  const previousSetSecureContext = server.setSecureContext;
  const reinstalling = function setSecureContext(this: tls.Server, contextOptions: tls.SecureContextOptions): void {
    previousSetSecureContext.call(this, contextOptions);
    ring.installOn(server, sessionIdContext);
  };
  server.setSecureContext = reinstalling;
  const onConnection = (socket: tls.TLSSocket): void => {
    const resumed = socket.isSessionReused();
    if (resumed) counts.resumedHandshakes++;
    else counts.fullHandshakes++;
    metrics.handshake(resumed);
  };
  server.on('secureConnection', onConnection);

  let closed = false;
  return {
    scope,
    metrics: metrics.registry,
    stats: () => ({ ...ring.stats(), ...counts }),
    close: async () => {
      if (closed) return;
      closed = true;
      stream.close();
      server.off('secureConnection', onConnection);
      if (server.setSecureContext === reinstalling) {
        if (ownSetSecureContext) server.setSecureContext = ownSetSecureContext;
        else delete (server as Partial<tls.Server>).setSecureContext;
      }
      ring.uninstall(server, restoreContext);
      ring.destroy();
    },
  };
}
