/** Options of GatewayClient, validated in one place with errors that name the option. */
import { resolveKeylessMode, type KeylessMode } from './keyless/keyless-options';

export interface GatewayClientOptions {
  /** One or more gateway addresses, `host:port`. Calls fail over between them. */
  endpoints: string[];
  /** PEM of the CA that issued the gateway's certificate. Required: system roots are never used. */
  ca: string | Buffer;
  /** PEM client certificate (chain) identifying this proxy. */
  cert: string | Buffer;
  /** PEM private key of the client certificate. */
  key: string | Buffer;
  /** Deadline of each call attempt, ms. Default 2000. */
  deadlineMs?: number;
  /** Extra attempts on UNAVAILABLE, each on the next endpoint. Default 2. */
  maxRetries?: number;
  /** First backoff before a retry, doubled each time, ms. Default 25. */
  retryBackoffMs?: number;
  /** HTTP/2 keepalive ping interval, ms. Default 30000. */
  keepaliveMs?: number;
  /** How long key metadata (public key, certificate chain) is cached, ms. Default 60000. */
  keyCacheTtlMs?: number;
  /** TLS server name to verify instead of the endpoint host (e.g. when dialing an IP). */
  serverName?: string;
  /** Keyless TLS: longest a handshake waits for its remote signature, ms. Default 2000. */
  keylessSignTimeoutMs?: number;
  /**
   * Keyless TLS: how server handshakes wait for the gateway's signature (docs/NON-BLOCKING.md).
   * 'auto' (default): the handshake pauses and the event loop keeps serving, with the signature
   * sent from the event loop over this client's SignStream, when the start-up self-check passes;
   * otherwise the blocking bridge, with one warning line. 'non-blocking': the same, but
   * tlsCredentials() fails if the self-check does. 'blocking': the handshake thread waits for a
   * signer worker thread.
   */
  keylessMode?: KeylessMode;
  /** Deprecated, use keylessMode: true is 'auto', false is 'blocking'. */
  keylessNonBlocking?: boolean;
}

export type ResolvedClientOptions = Required<Omit<GatewayClientOptions, 'serverName' | 'ca' | 'cert' | 'key' | 'keylessNonBlocking'>> & {
  serverName?: string;
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
};

function pem(name: string, value: unknown): Buffer {
  if (typeof value === 'string' && value.includes('-----BEGIN')) return Buffer.from(value);
  if (Buffer.isBuffer(value) && value.includes('-----BEGIN')) return value;
  throw new TypeError(`GatewayClient: option "${name}" must be a PEM string or Buffer`);
}

function positive(name: string, value: number | undefined, fallback: number, min = 1): number {
  if (value === undefined) return fallback;
  if (!Number.isFinite(value) || value < min) throw new TypeError(`GatewayClient: option "${name}" must be a number >= ${min}`);
  return value;
}

export function resolveClientOptions(options: GatewayClientOptions): ResolvedClientOptions {
  if (!Array.isArray(options.endpoints) || options.endpoints.length === 0) throw new TypeError('GatewayClient: option "endpoints" must list at least one host:port');
  for (const e of options.endpoints) {
    if (typeof e !== 'string' || !/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/.test(e)) throw new TypeError(`GatewayClient: endpoint ${JSON.stringify(e)} is not host:port`);
  }
  return {
    endpoints: [...options.endpoints],
    ca: pem('ca', options.ca),
    cert: pem('cert', options.cert),
    key: pem('key', options.key),
    deadlineMs: positive('deadlineMs', options.deadlineMs, 2000),
    maxRetries: positive('maxRetries', options.maxRetries, 2, 0),
    retryBackoffMs: positive('retryBackoffMs', options.retryBackoffMs, 25, 0),
    keepaliveMs: positive('keepaliveMs', options.keepaliveMs, 30_000, 1000),
    keyCacheTtlMs: positive('keyCacheTtlMs', options.keyCacheTtlMs, 60_000, 0),
    keylessSignTimeoutMs: positive('keylessSignTimeoutMs', options.keylessSignTimeoutMs, 2000),
    keylessMode: resolveKeylessMode(options.keylessMode, options.keylessNonBlocking, { mode: '"keylessMode"', nonBlocking: '"keylessNonBlocking"', owner: 'GatewayClient:' }),
    serverName: options.serverName,
  };
}
