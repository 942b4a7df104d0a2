import * as tls from 'node:tls';
import { loadTicketRingAddon, type TicketRingAddon, type TicketRingStats } from './ticket-ring-addon';

/** One session-ticket key as a TLS server uses it. Times are Unix seconds. */
export interface RingKey {
  name: Buffer;
  hmacKey: Buffer;
  aesKey: Buffer;
  notBefore: number;
  encryptUntil: number;
  decryptUntil: number;
}

/** What the ring reads of a tls.Server: its secure context (a Node internal, see docs/TICKET-KEYS.md). */
interface ServerInternals {
  _sharedCreds?: tls.SecureContext;
}

/**
 * A native ring of ticket keys installed on one server's SSL_CTX. Node gives no handle on a
 * server's SSL_CTX: a throwaway server-side TLSSocket is made on the server's secure context,
 * and the addon takes the SSL_CTX of the SSL created in its constructor.
 */
export class TicketKeyRing {
  private readonly addon: TicketRingAddon;
  private readonly id: number;
  private destroyed = false;

  constructor() {
    this.addon = loadTicketRingAddon();
    this.id = this.addon.ticketRingCreate();
  }

  setKeys(keys: readonly RingKey[]): void {
    const material = Buffer.concat(keys.flatMap((k) => [k.name, k.hmacKey, k.aesKey]));
    const times = new Float64Array(keys.flatMap((k) => [k.notBefore, k.encryptUntil, k.decryptUntil]));
    try {
      this.addon.ticketRingSetKeys(this.id, material, times);
    } finally {
      material.fill(0);
    }
  }

  /** Installs the ring on the server's current secure context with a fleet-wide session ID context. */
  installOn(server: tls.Server, sessionIdContext: Buffer): void {
    const context = (server as unknown as ServerInternals)._sharedCreds;
    if (context === undefined) throw new Error('shareTicketKeys: the server has no secure context (server._sharedCreds is missing: an unsupported Node version?)');
    this.addon.ticketRingBeginCapture();
    let probe: tls.TLSSocket | undefined;
    try {
      probe = new tls.TLSSocket(undefined as unknown as import('node:net').Socket, { isServer: true, secureContext: context });
      this.addon.ticketRingInstall(this.id, sessionIdContext);
    } finally {
      this.addon.ticketRingEndCapture();
      probe?.destroy();
    }
  }

  /** The server's own ticket key and `restoreSessionIdContext` apply again. */
  uninstall(restoreSessionIdContext?: Buffer): void {
    if (!this.destroyed) this.addon.ticketRingUninstall(this.id, restoreSessionIdContext ?? null);
  }

  stats(): TicketRingStats {
    return this.addon.ticketRingStats(this.id);
  }

  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.addon.ticketRingDestroy(this.id);
  }
}
