import type { SecureContextOptions } from 'node:tls';
import type { GatewayClient, KeylessTlsCredentials } from './gateway-client';
import { errorMessage } from '../common/errors';

/** Anything whose TLS context can be replaced for new connections: tls.Server, https.Server, http2 servers. */
export interface SecureContextTarget {
  setSecureContext(options: SecureContextOptions): void;
}

export interface TlsCredentialsFollower {
  /** The configured key name currently served (the concrete key behind an alias). */
  readonly current: string;
  /** Names served so far, in order. */
  readonly history: string[];
  /** Failed refreshes; the server keeps its last good context meanwhile. */
  readonly errors: string[];
  stop(): void;
}

/**
 * The configured name, other than `alias`, with the alias's public key (the alias itself if
 * none). A keyless key must name the concrete key: if it named the alias, every handshake between
 * the gateway's alias switch and this server's refresh would be signed by the new key for the old
 * certificate, and fail.
 */
export async function concreteKeyName(client: GatewayClient, alias: string): Promise<string> {
  const target = await client.getKey(alias, { refresh: true });
  const same = (await client.listKeys()).filter((k) => k.name !== alias && k.publicKey.equals(target.publicKey)).map((k) => k.name).sort();
  return same[0] ?? alias;
}

/**
 * Serves the key `name` (or the key an alias points to) on `server` and keeps following it:
 * every `intervalMs` it re-checks the alias and the certificate chain on the token and swaps in
 * new credentials when either changed. New connections get the new context; established ones
 * are untouched. Keep the old key configured under its own name until the followers moved on.
 */
export async function followTlsCredentials(client: GatewayClient, name: string, server: SecureContextTarget, intervalMs = 30_000): Promise<TlsCredentialsFollower> {
  let current = await concreteKeyName(client, name);
  let creds: KeylessTlsCredentials = await client.tlsCredentials(current);
  server.setSecureContext(creds);
  const history = [current];
  const errors: string[] = [];
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  const tick = async (): Promise<void> => {
    try {
      const next = await concreteKeyName(client, name);
      const nextCreds = await client.tlsCredentials(next);
      if (next !== current || nextCreds.cert !== creds.cert) {
        server.setSecureContext(nextCreds);
        current = next;
        creds = nextCreds;
        history.push(next);
      }
    } catch (err) {
      errors.push(errorMessage(err));
    }
    if (!stopped) {
      timer = setTimeout(() => void tick(), intervalMs);
      timer.unref();
    }
  };
  timer = setTimeout(() => void tick(), intervalMs);
  timer.unref();
  return {
    get current() { return current; },
    history,
    errors,
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}
