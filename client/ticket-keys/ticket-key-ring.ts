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

/** The Node internals the ring relies on (docs/TICKET-KEYS.md "Node internals"). */
interface ServerInternals {
  /** The server's secure context, which every new connection uses. */
  _sharedCreds?: tls.SecureContext & { context?: { setSessionIdContext?(context: string): void } };
}

function secureContextOf(server: tls.Server): NonNullable<ServerInternals['_sharedCreds']> {
  const context = (server as unknown as ServerInternals)._sharedCreds;
  if (context === undefined || typeof context.context?.setSessionIdContext !== 'function') {
    throw new Error('shareTicketKeys: the server\'s secure context is not reachable (server._sharedCreds.context): an unsupported Node version?');
  }
  return context;
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

  /**
   * Installs the ring on the server's current secure context and sets its session ID context
   * (through Node's own SecureContext, which Node 22+ applies to each connection).
   */
  installOn(server: tls.Server, sessionIdContext: string): void {
    const context = secureContextOf(server);
    this.addon.ticketRingBeginCapture();
    let probe: tls.TLSSocket | undefined;
    try {
      probe = new tls.TLSSocket(undefined as unknown as import('node:net').Socket, { isServer: true, secureContext: context });
      this.addon.ticketRingInstall(this.id);
    } finally {
      this.addon.ticketRingEndCapture();
      probe?.destroy();
    }
    context.context?.setSessionIdContext?.(sessionIdContext);
  }

  /** The server's own ticket key applies again, with `ownSessionIdContext` if given. */
  uninstall(server: tls.Server, ownSessionIdContext?: string): void {
    if (this.destroyed) return;
    this.addon.ticketRingUninstall(this.id);
    if (ownSessionIdContext !== undefined) secureContextOf(server).context?.setSessionIdContext?.(ownSessionIdContext);
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
