/**
 * How a keyless TLS server follows a key alias through a rotation without a failed handshake.
 *
 * A keyless key reference names the key the gateway signs with. If a server kept signing with the
 * ALIAS ("web") while still serving the OLD certificate, every handshake between the gateway's
 * alias switch and the server's next refresh would be signed by the new key for the old
 * certificate, and fail. So the server uses the alias only to discover WHICH key to serve: it
 * finds the concrete configured name with the same public key (ListKeys), and serves that name's
 * certificate and key reference. Old contexts keep signing with the old concrete key (still
 * configured during the overlap) until the server swaps in the new context; connections already
 * established are not touched by setSecureContext.
 */
import type * as https from 'node:https';
import type { GatewayClient } from '../../../client/gateway-client';

/** The configured name, other than `alias`, whose public key is the alias's (the alias itself if none). */
export async function concreteKeyName(client: GatewayClient, alias: string): Promise<string> {
  const target = await client.getKey(alias, { refresh: true });
  const same = (await client.listKeys()).filter((k) => k.name !== alias && k.publicKey.equals(target.publicKey)).map((k) => k.name).sort();
  return same[0] ?? alias;
}

export interface AliasFollower {
  /** The concrete key name the server currently serves. */
  readonly current: string;
  /** Names served so far, in order. */
  readonly history: string[];
  /** Failures of the refresh loop (the server keeps its context meanwhile). */
  readonly errors: string[];
  stop(): void;
}

/**
 * Gives `server` the credentials of the key `alias` points to now, then re-checks every
 * `intervalMs` and swaps in new credentials (new connections only) when the alias moved or the
 * chain changed.
 */
export async function followAlias(client: GatewayClient, alias: string, server: https.Server, intervalMs: number): Promise<AliasFollower> {
  let current = await concreteKeyName(client, alias);
  let creds = await client.tlsCredentials(current);
  server.setSecureContext(creds);
  const history = [current];
  const errors: string[] = [];
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  const tick = async (): Promise<void> => {
    try {
      const name = await concreteKeyName(client, alias);
      const next = await client.tlsCredentials(name);
      if (name !== current || next.cert !== creds.cert) {
        server.setSecureContext(next);
        current = name;
        creds = next;
        history.push(name);
      }
    } catch (err) {
      errors.push((err as Error).message);
    }
    if (!stopped) timer = setTimeout(() => void tick(), intervalMs);
  };
  timer = setTimeout(() => void tick(), intervalMs);
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
