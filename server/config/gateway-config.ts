/** The validated, fully defaulted gateway configuration. See docs in README "Configuration". */

export interface TokenSelector {
  /** CKA token label (CK_TOKEN_INFO.label, trailing spaces trimmed). */
  label?: string;
  /** CK_TOKEN_INFO.serialNumber. */
  serial?: string;
}

export interface PinSource {
  /** Path of a file whose content (trailing newline trimmed) is the user PIN. */
  file?: string;
  /** Name of an environment variable holding the user PIN. */
  env?: string;
}

export interface SessionPoolConfig {
  min: number;
  max: number;
  /** How long a request may wait for a free session before RESOURCE_EXHAUSTED. */
  acquireTimeoutMs: number;
  /** Requests allowed to wait for a session; beyond it RESOURCE_EXHAUSTED at once. */
  maxWaiting: number;
  /** A session idle longer than this is checked with C_GetSessionInfo before reuse. */
  validateAfterIdleMs: number;
}

export interface Pkcs11Config {
  module: string;
  /** Environment variables the module reads (e.g. SOFTHSM2_CONF), set before it is loaded. */
  environment: Record<string, string>;
  token: TokenSelector;
  pin: PinSource;
  /** Threads that run the blocking PKCS#11 sign calls. */
  signThreads: number;
  sessions: SessionPoolConfig;
  /** A single HSM call taking longer than this frees its caller with UNAVAILABLE. */
  operationTimeoutMs: number;
  /** How often certificate chains are re-read from the token (so a renewed chain needs no restart). */
  certificateRefreshMs: number;
  /** How often the token's login state is checked (health, readiness). */
  healthCheckIntervalMs: number;
  /** First and longest delay between reconnection attempts after an HSM failure. */
  reconnectBackoffMs: { initial: number; max: number };
  /** Accept keys that are extractable or not sensitive (a warning is logged per key). */
  allowExtractableKeys: boolean;
}

export interface KeyConfig {
  /** The name clients use. */
  name: string;
  /** CKA_LABEL of the private key. */
  label?: string;
  /** CKA_ID of the private key, lowercase hex. */
  id?: string;
  /** RFC 7512 PKCS#11 URI (object= and/or id= are used). */
  uri?: string;
}

export interface AuthorizationRule {
  /**
   * An identity, or a prefix followed by a trailing `*`: a URI (matches URI SANs), a DNS name
   * (DNS SANs), or `cn:NAME` (subject CN; never matched otherwise). `uri:` and `dns:` may be
   * written explicitly. See server/auth/identity-pattern.ts.
   */
  identity: string;
  /** Key names, or prefixes followed by a trailing `*`. May be empty when the rule grants ticketKeyScopes. */
  keys: string[];
  /** SignatureAlgorithm names; empty means every algorithm the key supports. */
  algorithms: string[];
  /** Token bucket for the identities this rule matches (the first matching rule with one applies). */
  rateLimit?: RateLimitConfig;
  /** Session-ticket key scopes (WatchTicketKeys), or prefixes followed by a trailing `*`. */
  ticketKeyScopes: string[];
}

/** Session-ticket keys derived in the HSM (service TicketKeys); absent: the service is not offered. */
export interface TicketKeysSection {
  /** CKA_LABEL of the CKK_GENERIC_SECRET root on the token. */
  root: string;
  /** Length of an epoch: each epoch has its own key (default 3600). */
  epochSeconds: number;
  /** Epochs after its own during which a key still decrypts tickets (default 2). */
  decryptEpochs: number;
}

export interface RateLimitConfig {
  /** Sustained sign requests per second. */
  perSecond: number;
  /** Requests allowed in a burst above the sustained rate. */
  burst: number;
}

export interface ListenConfig {
  /** gRPC (mTLS) host:port. */
  grpc: string;
  /** HTTP host:port for /metrics, /healthz, /readyz. */
  http: string;
}

export interface TlsConfig {
  cert: string;
  key: string;
  clientCa: string;
  /** PEM certificate revocation lists for the client CA chain, checked at handshake and on reload. */
  crl?: string;
}

export interface LimitsConfig {
  /** Sign requests being handled at once (waiting or signing), across all callers. */
  maxInFlight: number;
  /** Requests in flight on one SignStream (being signed, or answered but not yet written). */
  maxStreamInFlight: number;
  /** SignStreams open at once on one connection. */
  maxSignStreamsPerConnection: number;
  /** Cap on a `message` input, in bytes. */
  maxMessageBytes: number;
  /** Cap on a whole gRPC message received, in bytes. */
  maxReceiveMessageBytes: number;
  /** Deadline applied to a sign request when the call carries none (and to SignStream items). */
  requestTimeoutMs: number;
  /** Concurrent gRPC streams per HTTP/2 connection. */
  maxConcurrentStreams: number;
  /** TCP connections to the gRPC port; more are dropped at accept. */
  maxConnections: number;
  /** Connections that have not finished their TLS handshake; more are dropped at accept. */
  maxHandshakes: number;
  /** The same, per source address (an IPv4 address or an IPv6 /64). */
  maxHandshakesPerAddress: number;
  /** A TLS handshake not finished within this is dropped (slow or stalled clients). */
  handshakeTimeoutMs: number;
  /** A connection older than this is sent GOAWAY, so clients reconnect and present their certificate again. */
  maxConnectionAgeMs: number;
  /** After that GOAWAY, calls in flight get this long before the connection is closed. */
  maxConnectionAgeGraceMs: number;
  /** Memory one HTTP/2 connection may hold (queued frames, header tables, streams) before its new streams are refused, MiB. */
  maxSessionMemoryMb: number;
}

export interface LoggingConfig {
  level: LogLevel;
  /** One JSON audit line per sign request. */
  audit: boolean;
}

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

/** An environment variable that replaced a value written in the config file. */
export interface EnvironmentOverride {
  env: string;
  field: string;
  fileValue: string;
  value: string;
}

export interface GatewayConfig {
  /** Directory relative paths were resolved against (the config file's directory). */
  baseDir: string;
  /** Environment variables that replaced values from the file (logged at start-up). */
  environmentOverrides: EnvironmentOverride[];
  pkcs11: Pkcs11Config;
  keys: KeyConfig[];
  listen: ListenConfig;
  tls: TlsConfig;
  authorization: { rules: AuthorizationRule[] };
  ticketKeys?: TicketKeysSection;
  limits: LimitsConfig;
  logging: LoggingConfig;
  shutdown: { graceMs: number };
}
