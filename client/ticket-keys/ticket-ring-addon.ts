// The keyless addon's session-ticket key rings (native/src/node/ticket_keys.cc).
import { loadKeylessAddon } from '../keyless/keyless-addon';

/** Counters of one ring's tickets. */
export interface TicketRingStats {
  /** Tickets encrypted. */
  issued: number;
  /** No key held for now: no ticket was sent. */
  noKey: number;
  /** Tickets decrypted with the current key. */
  resumed: number;
  /** Tickets decrypted with another key still in its window (a new ticket is sent). */
  renewed: number;
  /** Tickets under a key the ring does not hold: full handshake. */
  unknownKey: number;
  /** Tickets under a key past its decrypt window: full handshake. */
  expired: number;
  /** Keys held now. */
  keys: number;
}

export interface TicketRingAddon {
  ticketRingCreate(): number;
  /** keys: 80 bytes per key (name 16 | HMAC 32 | AES 32); times: notBefore, encryptUntil, decryptUntil per key (Unix s). */
  ticketRingSetKeys(ring: number, keys: Buffer, times: Float64Array): void;
  /** The next SSL created on this thread is the one ticketRingInstall() uses. */
  ticketRingBeginCapture(): void;
  ticketRingEndCapture(): void;
  /** Installs the ring on the SSL_CTX of the SSL captured since ticketRingBeginCapture(). */
  ticketRingInstall(ring: number): void;
  ticketRingUninstall(ring: number): void;
  ticketRingStats(ring: number): TicketRingStats;
  ticketRingDestroy(ring: number): void;
}

const RING_FUNCTIONS = [
  'ticketRingCreate', 'ticketRingSetKeys', 'ticketRingBeginCapture', 'ticketRingEndCapture',
  'ticketRingInstall', 'ticketRingUninstall', 'ticketRingStats', 'ticketRingDestroy',
] as const;

export function loadTicketRingAddon(): TicketRingAddon {
  const exports = loadKeylessAddon() as unknown as Record<string, unknown>;
  for (const name of RING_FUNCTIONS) {
    if (typeof exports[name] !== 'function') throw new Error(`keyless: the native addon does not export ${name}(); rebuild it with npm run build:addon`);
  }
  return exports as unknown as TicketRingAddon;
}
