import { isIPv6 } from 'node:net';

export type HandshakeRefusal = 'max_handshakes' | 'max_handshakes_per_address';

/**
 * Where a connection comes from, for the per-source cap: an IPv4 address (also when written as
 * IPv4-mapped IPv6), or the /64 of an IPv6 address (one host usually holds a whole /64).
 */
export function sourceOf(address: string | undefined): string {
  if (!address) return '?';
  if (address.startsWith('::ffff:') && address.includes('.')) return address.slice(7);
  if (!isIPv6(address)) return address;
  const [head, tail = ''] = address.split('::');
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const groups = [...left, ...Array<string>(Math.max(0, 8 - left.length - right.length)).fill('0'), ...right];
  return `${groups.slice(0, 4).map((g) => parseInt(g, 16).toString(16)).join(':')}::/64`;
}

/**
 * Counts connections that have not finished their TLS handshake, in total and per source, and
 * refuses one that would pass either cap: handshakes never take the slots of connections that
 * finished theirs, and one address cannot take every handshake slot.
 */
export class HandshakeAdmission {
  private inProgress = 0;
  private readonly bySource = new Map<string, number>();

  constructor(private readonly maxTotal: number, private readonly maxPerSource: number) {}

  /** Counts the handshake in, or says which cap it would pass. */
  admit(source: string): HandshakeRefusal | undefined {
    if (this.inProgress >= this.maxTotal) return 'max_handshakes';
    const fromSource = this.bySource.get(source) ?? 0;
    if (fromSource >= this.maxPerSource) return 'max_handshakes_per_address';
    this.inProgress++;
    this.bySource.set(source, fromSource + 1);
    return undefined;
  }

  /** The handshake finished, failed or timed out. */
  release(source: string): void {
    this.inProgress--;
    const left = (this.bySource.get(source) ?? 1) - 1;
    if (left === 0) this.bySource.delete(source);
    else this.bySource.set(source, left);
  }

  get count(): number {
    return this.inProgress;
  }
}
