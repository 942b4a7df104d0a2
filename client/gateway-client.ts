import { setTimeout as sleep } from 'node:timers/promises';
import * as path from 'node:path';
import { X509Certificate } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import type { Registry } from 'prom-client';
import { KeylessBridge } from './keyless/keyless-bridge';
import {
  SignatureAlgorithm, SignerClient, type KeyInfo, type SignRequest, type SignResponse,
} from '../proto/generated/hsmgateway/v1/signer';
import { keyTypeName, type AlgorithmName, type KeyTypeName } from '../common/algorithms';
import { GatewayClientError } from './gateway-client-error';
import { SignStreamChannel, type SignCallback } from './sign-stream-channel';
import { followTlsCredentials, type SecureContextTarget, type TlsCredentialsFollower } from './tls-credentials-follower';
import { resolveClientOptions, type GatewayClientOptions, type ResolvedClientOptions } from './gateway-client-options';
import { TicketKeysClient } from '../proto/generated/hsmgateway/v1/ticket_keys';
import { TicketKeyStream, type TicketKeyListener } from './ticket-keys/ticket-key-stream';
import { shareTicketKeys, type ShareTicketKeysOptions, type TicketKeyServer, type TicketKeySharing } from './ticket-keys/share-ticket-keys';

export type { AlgorithmName };

export interface KeyDescription {
  name: string;
  type: KeyTypeName;
  bits: number;
  /** 'P-256', 'P-384', 'P-521', 'Ed25519', or '' for RSA. */
  curve: string;
  /** SubjectPublicKeyInfo, DER. */
  publicKey: Buffer;
  /** Algorithms this client may use with the key. */
  algorithms: AlgorithmName[];
  /** DER certificates, leaf first. */
  certificateChain: Buffer[];
}


export function algorithmValue(algorithm: SignatureAlgorithm | AlgorithmName): SignatureAlgorithm {
  if (typeof algorithm === 'number') return algorithm;
  const v = SignatureAlgorithm[algorithm];
  if (typeof v !== 'number' || v <= 0) throw new TypeError(`unknown signature algorithm "${algorithm}"`);
  return v;
}

function describeKey(info: KeyInfo): KeyDescription {
  return {
    name: info.name,
    type: keyTypeName(info.type),
    bits: info.bits,
    curve: info.curve,
    publicKey: Buffer.from(info.publicKey),
    algorithms: info.algorithms.map((a) => SignatureAlgorithm[a] as AlgorithmName),
    certificateChain: info.certificateChain.map((c) => Buffer.from(c)),
  };
}

interface Endpoint {
  address: string;
  client: SignerClient;
  stream: SignStreamChannel;
  /** performance.now() until which the endpoint is skipped after UNAVAILABLE. */
  downUntil: number;
  failures: number;
}


/** An endpoint answered: back in the rotation. */
function endpointUp(endpoint: Endpoint): void {
  endpoint.failures = 0;
  endpoint.downUntil = 0;
}

/** An endpoint failed with UNAVAILABLE: skipped for a backoff that doubles up to 5 s. */
function endpointDown(endpoint: Endpoint): void {
  endpoint.failures++;
  endpoint.downUntil = performance.now() + Math.min(100 * 2 ** (endpoint.failures - 1), 5000);
}

/** Options of the key and certificate that tlsCredentials() returns. */
export interface TlsCredentialsOptions {
  /** PEM certificate chain to serve instead of the one stored on the token. */
  cert?: string | Buffer;
}

/** `{ key, cert }` to spread into tls/https/http2 server options or tls.connect. */
export interface KeylessTlsCredentials {
  /** A keyless key reference: names the remote key, holds no secret. */
  key: string;
  /** PEM chain, leaf first. */
  cert: string;
}

function derToPem(der: Buffer): string {
  return `-----BEGIN CERTIFICATE-----\n${der.toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '')}\n-----END CERTIFICATE-----\n`;
}

/**
 * A client of the hsm-gateway Signer service: mTLS with an explicit CA, a deadline on every call,
 * failover between endpoints on UNAVAILABLE with bounded, backed-off retries (signing is
 * idempotent), keepalive, and a cache of key metadata.
 */
export class GatewayClient {
  protected readonly options: ResolvedClientOptions;
  private readonly endpoints: Endpoint[];
  private next = 0;
  private readonly keyCache = new Map<string, { key: KeyDescription; fetchedAt: number }>();
  private bridge: Promise<KeylessBridge> | undefined;
  /** TicketKeys clients per endpoint, made on first use (they share the Signer clients' channels' settings). */
  private ticketKeyClients: Array<{ address: string; client: TicketKeysClient }> | undefined;
  private readonly ticketKeySharings = new Set<TicketKeySharing>();
  private readonly makeTicketKeysClient: (address: string) => TicketKeysClient;

  constructor(options: GatewayClientOptions) {
    this.options = resolveClientOptions(options);
    const credentials = grpc.credentials.createSsl(this.options.ca, this.options.key, this.options.cert);
    const channelOptions: grpc.ChannelOptions = {
      'grpc.keepalive_time_ms': this.options.keepaliveMs,
      'grpc.keepalive_timeout_ms': 10_000,
      'grpc.keepalive_permit_without_calls': 1,
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': 2000,
      ...(this.options.serverName ? { 'grpc.ssl_target_name_override': this.options.serverName, 'grpc.default_authority': this.options.serverName } : {}),
    };
    this.makeTicketKeysClient = (address) => new TicketKeysClient(address, credentials, channelOptions);
    const { ca, cert, key, serverName, keepaliveMs } = this.options;
    this.endpoints = this.options.endpoints.map((address) => ({
      address, client: new SignerClient(address, credentials, channelOptions), downUntil: 0, failures: 0,
      stream: new SignStreamChannel({ address, ca, cert, key, serverName, keepaliveMs }),
    }));
  }

  /**
   * The endpoint for an attempt: the first healthy one in round-robin order from `start`, or, if
   * every endpoint is marked down, the one back soonest. Each retry starts one slot further, so a
   * retry goes to another endpoint than the attempt that just failed when one is healthy.
   */
  private endpointFor(start: number): Endpoint {
    const now = performance.now();
    const count = this.endpoints.length;
    let soonest = this.endpoints[start % count];
    for (let i = 0; i < count; i++) {
      const endpoint = this.endpoints[(start + i) % count];
      if (endpoint.downUntil <= now) return endpoint;
      if (endpoint.downUntil < soonest.downUntil) soonest = endpoint;
    }
    return soonest;
  }

  /** Runs a call with failover: UNAVAILABLE moves on to the next endpoint after a backoff. */
  protected async withFailover<T>(call: (client: SignerClient, deadline: Date, endpoint: Endpoint) => Promise<T>): Promise<T> {
    const start = this.next++ % this.endpoints.length;
    let lastError: GatewayClientError | undefined;
    for (let attempt = 0; attempt <= this.options.maxRetries; attempt++) {
      if (attempt > 0) await sleep(Math.min(this.options.retryBackoffMs * 2 ** (attempt - 1), 1000));
      const endpoint = this.endpointFor(start + attempt);
      try {
        const result = await call(endpoint.client, new Date(Date.now() + this.options.deadlineMs), endpoint);
        endpointUp(endpoint);
        return result;
      } catch (err) {
        lastError = GatewayClientError.from(err as Error, endpoint.address);
        if (lastError.code !== grpc.status.UNAVAILABLE) throw lastError;
        endpointDown(endpoint);
      }
    }
    throw lastError ?? new GatewayClientError(grpc.status.UNAVAILABLE, 'no endpoint');
  }

  /**
   * signStreamed() reporting through a callback, with the same failover: the keyless
   * handshakes' path, with no promise per request.
   */
  private submitStreamed(key: string, algorithm: SignatureAlgorithm, digest: Buffer, deadlineMs: number, done: SignCallback): void {
    const input = algorithm === SignatureAlgorithm.ED25519 ? { $case: 'message' as const, value: digest } : { $case: 'digest' as const, value: digest };
    const start = this.next++ % this.endpoints.length;
    const attempt = (n: number): void => {
      const endpoint = this.endpointFor(start + n);
      endpoint.stream.submit(key, algorithm, input, deadlineMs, (error, signature) => {
        if (error === null) {
          endpointUp(endpoint);
          done(null, signature);
        } else if (error.code !== grpc.status.UNAVAILABLE) {
          done(error);
        } else {
          endpointDown(endpoint);
          if (n >= this.options.maxRetries) done(error);
          else setTimeout(attempt, Math.min(this.options.retryBackoffMs * 2 ** n, 1000), n + 1);
        }
      });
    };
    attempt(0);
  }

  /** Signs a digest (or, for ED25519, a message) with a named key. ECDSA signatures are DER. */
  async sign(key: string, algorithm: SignatureAlgorithm | AlgorithmName, digest: Buffer): Promise<Buffer> {
    const alg = algorithmValue(algorithm);
    return this.unarySign(key, alg, alg === SignatureAlgorithm.ED25519 ? { $case: 'message', value: digest } : { $case: 'digest', value: digest });
  }

  /**
   * Like sign(), over a long-lived SignStream per endpoint: the high-rate path (no per-call
   * HTTP/2 stream setup). A broken stream fails its requests with UNAVAILABLE, which fails
   * them over to another endpoint like unary calls.
   */
  async signStreamed(key: string, algorithm: SignatureAlgorithm | AlgorithmName, digest: Buffer): Promise<Buffer> {
    const alg = algorithmValue(algorithm);
    return new Promise((resolve, reject) => {
      this.submitStreamed(key, alg, digest, this.options.deadlineMs, (error, signature) => (error !== null ? reject(error) : resolve(signature as Buffer)));
    });
  }

  /** Signs a whole message; the gateway hashes it (capped at the gateway's message limit). */
  async signMessage(key: string, algorithm: SignatureAlgorithm | AlgorithmName, message: Buffer): Promise<Buffer> {
    return this.unarySign(key, algorithmValue(algorithm), { $case: 'message', value: message });
  }

  /** One unary Sign call, failed over like every call. */
  private async unarySign(key: string, algorithm: SignatureAlgorithm, input: SignRequest['input']): Promise<Buffer> {
    const response = await this.withFailover((client, deadline) => new Promise<SignResponse>((resolve, reject) => {
      client.sign({ key, algorithm, input, requestId: 0n }, new grpc.Metadata(), { deadline }, (err, res) => (err ? reject(err) : resolve(res)));
    }));
    return Buffer.from(response.signature);
  }

  /** Key metadata, cached for keyCacheTtlMs (pass refresh to bypass the cache). */
  async getKey(name: string, options: { refresh?: boolean } = {}): Promise<KeyDescription> {
    const cached = this.keyCache.get(name);
    if (cached && !options.refresh && performance.now() - cached.fetchedAt < this.options.keyCacheTtlMs) return cached.key;
    const info = await this.withFailover((client, deadline) => new Promise<KeyInfo>((resolve, reject) => {
      client.getKey({ key: name }, new grpc.Metadata(), { deadline }, (err, res) => (err ? reject(err) : resolve(res)));
    }));
    const key = describeKey(info);
    this.keyCache.set(name, { key, fetchedAt: performance.now() });
    return key;
  }

  async listKeys(): Promise<KeyDescription[]> {
    const res = await this.withFailover((client, deadline) => new Promise<KeyDescription[]>((resolve, reject) => {
      client.listKeys({}, new grpc.Metadata(), { deadline }, (err, r) => (err ? reject(err) : resolve(r.keys.map(describeKey))));
    }));
    for (const key of res) this.keyCache.set(key.name, { key, fetchedAt: performance.now() });
    return res;
  }

  /**
   * A keyless key and its certificate chain for Node's TLS: `https.createServer({ ...creds })`,
   * `tls.createSecureContext(creds)` (SNI) or `tls.connect({ ...creds })` (mTLS upstream). The
   * handshake signature is made by the gateway; the process never holds the private key.
   */
  async tlsCredentials(name: string, options: TlsCredentialsOptions = {}): Promise<KeylessTlsCredentials> {
    const info = await this.getKey(name, { refresh: true });
    let cert: string;
    if (options.cert !== undefined) {
      cert = String(options.cert);
    } else if (info.certificateChain.length > 0) {
      cert = info.certificateChain.map(derToPem).join('');
    } else {
      throw new Error(`key "${name}" has no certificate on the token; install one or pass { cert }`);
    }
    const leaf = new X509Certificate(cert);
    if (!leaf.publicKey.export({ type: 'spki', format: 'der' }).equals(info.publicKey)) {
      throw new Error(`the certificate for "${name}" (${leaf.subject.replace(/\n/g, ', ')}) does not match the key's public key`);
    }
    const bridge = await this.keylessBridge();
    return { key: bridge.keyPem(name, info.publicKey), cert };
  }

  /**
   * Serves `name` (a key or an alias) on `server` and follows it through rotations: the alias's
   * concrete key and the token's certificate chain are re-checked every `intervalMs` and swapped
   * in for new connections when they change.
   */
  followTlsCredentials(name: string, server: SecureContextTarget, options: { intervalMs?: number } = {}): Promise<TlsCredentialsFollower> {
    return followTlsCredentials(this, name, server, options.intervalMs);
  }

  /**
   * Follows a scope's session-ticket keys (WatchTicketKeys): `listener.update` gets each set the
   * gateway sends; the stream moves to another endpoint when one goes away.
   */
  watchTicketKeys(scope: string, listener: TicketKeyListener, firstSetTimeoutMs = 10_000): TicketKeyStream {
    this.ticketKeyClients ??= this.options.endpoints.map((address) => ({ address, client: this.makeTicketKeysClient(address) }));
    return new TicketKeyStream(this.ticketKeyClients, scope, listener, firstSetTimeoutMs);
  }

  /**
   * Installs the fleet's session-ticket keys of `scope` on a tls/https/http2 secure server, with
   * a session ID context derived from the scope, and follows the gateway's rotations: a session
   * from any server of the scope resumes on this one (no remote signature). Rejects with a
   * GatewayClientError (e.g. PERMISSION_DENIED) if the gateway refuses the scope. close() gives
   * the server its own ticket key back. See docs/TICKET-KEYS.md.
   */
  async shareTicketKeys(server: TicketKeyServer, options: ShareTicketKeysOptions): Promise<TicketKeySharing> {
    const sharing = await shareTicketKeys((scope, listener, timeoutMs) => this.watchTicketKeys(scope, listener, timeoutMs), server, options);
    this.ticketKeySharings.add(sharing);
    const close = sharing.close;
    return { ...sharing, stats: sharing.stats, close: async () => { this.ticketKeySharings.delete(sharing); await close(); } };
  }

  /** Per-process keyless metrics (remote signs, latency, failures) as a prom-client Registry to mount. */
  async keylessMetricsRegistry(): Promise<Registry> {
    return (await this.keylessBridge()).metrics.registry;
  }

  /**
   * The bridge for this client's keyless keys, started on first use. In non-blocking mode the
   * handshakes' signatures go out over this client's own SignStreams, from the event loop; the
   * bridge's worker (blocking path) has a GatewayClient of its own, which connects on first use.
   */
  private keylessBridge(): Promise<KeylessBridge> {
    this.bridge ??= (async () => {
      const o = this.options;
      const deadlineMs = Math.min(o.deadlineMs, o.keylessSignTimeoutMs);
      // KeylessBridge loads the native addon only here, on first use.
      return KeylessBridge.start({
        signerModule: path.join(__dirname, 'gateway-remote-signer.js'),
        signerOptions: {
          endpoints: o.endpoints, ca: o.ca.toString(), cert: o.cert.toString(), key: o.key.toString(),
          deadlineMs, maxRetries: o.maxRetries, retryBackoffMs: o.retryBackoffMs,
          keepaliveMs: o.keepaliveMs, serverName: o.serverName,
        } satisfies GatewayClientOptions,
        signTimeoutMs: o.keylessSignTimeoutMs,
        mode: o.keylessMode,
        signer: {
          sign: (key, algorithm, digest) => new Promise<Buffer>((resolve, reject) => {
            this.submitStreamed(key, algorithm, digest, deadlineMs, (error, signature) => (error !== null ? reject(error) : resolve(signature as Buffer)));
          }),
          signWithCallback: (key, algorithm, digest, done) => this.submitStreamed(key, algorithm, digest, deadlineMs, done),
        },
      });
    })();
    this.bridge.catch(() => { this.bridge = undefined; });
    return this.bridge;
  }

  async close(): Promise<void> {
    for (const sharing of this.ticketKeySharings) await sharing.close();
    this.ticketKeySharings.clear();
    for (const t of this.ticketKeyClients ?? []) t.client.close();
    for (const e of this.endpoints) {
      e.stream.close();
      e.client.close();
    }
    const bridge = this.bridge;
    this.bridge = undefined;
    if (bridge) await (await bridge).close();
  }
}
