import * as client from 'prom-client';
import { latencyBuckets } from '../../common/latency-buckets';


export interface PoolGaugeSource {
  poolStats: { size: number; inUse: number; idle: number; waiting: number; max: number };
  signThreads: { total: number; busy: number };
  ready: boolean;
}

/** Read at scrape time: counting per request would cost two gauge updates on the hot path. */
export interface InFlightSource {
  requestsInFlight: number;
}

export interface ConnectionGaugeSource {
  stats: { handshakes: number; connections: number };
}

/**
 * Every metric the gateway exports, declared once. The hot path calls the small methods at the
 * bottom, never the metric objects directly, and label children are cached.
 */
export class GatewayMetrics {
  readonly registry = new client.Registry();

  private readonly signRequests = new client.Counter({
    name: 'hsmgw_sign_requests_total',
    help: 'Sign requests answered (unary Sign and each SignStream item), by key, algorithm and gRPC status code name.',
    labelNames: ['key', 'algorithm', 'code'] as const,
    registers: [this.registry],
  });
  private readonly requestDuration = new client.Histogram({
    name: 'hsmgw_sign_request_duration_seconds',
    help: 'Whole sign request, from receipt to answer, including queueing for a session and the HSM call.',
    labelNames: ['rpc'] as const,
    buckets: latencyBuckets(),
    registers: [this.registry],
  });
  private readonly sessionWait = new client.Histogram({
    name: 'hsmgw_session_wait_seconds',
    help: 'Time a sign request was queued before a sign thread (holding a PKCS#11 session) ran it (queue time).',
    buckets: latencyBuckets(),
    registers: [this.registry],
  });
  private readonly hsmOperation = new client.Histogram({
    name: 'hsmgw_hsm_operation_seconds',
    help: 'Time inside the HSM: C_SignInit + C_Sign on the sign thread, not including any queueing.',
    buckets: latencyBuckets(),
    registers: [this.registry],
  });
  private readonly hsmErrors = new client.Counter({
    name: 'hsmgw_hsm_errors_total',
    help: 'PKCS#11 calls that failed, by CKR name.',
    labelNames: ['ckr'] as const,
    registers: [this.registry],
  });
  private readonly authzDenials = new client.Counter({
    name: 'hsmgw_authorization_denials_total',
    help: 'Requests refused with PERMISSION_DENIED or UNAUTHENTICATED, by reason.',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  private readonly rateLimitedRequests = new client.Counter({
    name: 'hsmgw_rate_limited_total',
    help: 'Sign requests refused with RESOURCE_EXHAUSTED by the per-identity rate limit, by identity.',
    labelNames: ['identity'] as const,
    registers: [this.registry],
  });
  private readonly tlsHandshakeFailures = new client.Counter({
    name: 'hsmgw_tls_handshake_failures_total',
    help: 'TLS handshakes on the gRPC port that failed or were refused, by reason.',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  private readonly connectionsRefused = new client.Counter({
    name: 'hsmgw_connections_refused_total',
    help: 'TCP connections to the gRPC port dropped at accept, by the cap reached: max_connections, max_handshakes, max_handshakes_per_address.',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  private readonly connectionsClosed = new client.Counter({
    name: 'hsmgw_connections_closed_total',
    help: 'Authenticated connections the gateway closed because their client certificate expired, was revoked or is no longer trusted, by reason.',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  private readonly droppedLogLines = new client.Counter({
    name: 'hsmgw_log_lines_dropped_total',
    help: 'Log lines that could not be written to stdout (queue full or output gone), by kind: audit or other.',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  });
  private readonly deferredLogWrites = new client.Counter({
    name: 'hsmgw_log_writes_deferred_total',
    help: 'Writes of log lines that stdout took only in part or refused for now (EAGAIN); the rest was queued and retried.',
    registers: [this.registry],
  });
  private readonly crlNextUpdate = new client.Gauge({
    name: 'hsmgw_tls_crl_next_update_timestamp_seconds',
    help: 'Unix time of the earliest nextUpdate among the configured client CRLs (tls.crl); after it new handshakes are refused.',
    registers: [this.registry],
  });
  private readonly rateLimitedIdentities = new Set<string>();
  private readonly configReloads = new client.Counter({
    name: 'hsmgw_config_reloads_total',
    help: 'Reloads of the configuration and TLS files (SIGHUP or file change), by what and result.',
    labelNames: ['what', 'result'] as const,
    registers: [this.registry],
  });
  private readonly reconnects = new client.Counter({
    name: 'hsmgw_hsm_reconnects_total',
    help: 'Attempts to re-initialise the PKCS#11 module and log in again after an HSM failure, by result.',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });
  private readonly logins = new client.Counter({
    name: 'hsmgw_hsm_logins_total',
    help: 'Re-login attempts after CKR_USER_NOT_LOGGED_IN, by result.',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });
  private readonly sessionsDiscarded = new client.Counter({
    name: 'hsmgw_sessions_discarded_total',
    help: 'PKCS#11 sessions thrown away instead of reused, by reason (session-lost, timeout, error).',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  private readonly signThreadReplacements = new client.Counter({
    name: 'hsmgw_sign_thread_replacements_total',
    help: 'Sign threads started in place of one whose PKCS#11 call hung past operationTimeoutMs (stuck) or that died (died).',
    labelNames: ['cause'] as const,
    registers: [this.registry],
  });
  private readonly certificateExpiry = new client.Gauge({
    name: 'hsmgw_tls_certificate_expiry_timestamp_seconds',
    help: 'Unix time at which the gateway\'s own TLS server certificate expires.',
    registers: [this.registry],
  });

  private readonly ticketKeyFetches = new client.Counter({
    name: 'hsmgw_ticket_key_fetches_total',
    help: 'Session-ticket key sets sent to WatchTicketKeys callers and refused requests, by scope and result (gRPC status code name); refused requests have scope "-", scopes beyond 100 distinct ones count as "other".',
    labelNames: ['scope', 'result'] as const,
    registers: [this.registry],
  });
  private readonly ticketKeyDerivations = new client.Counter({
    name: 'hsmgw_ticket_key_derivations_total',
    help: 'Epoch session-ticket keys derived in the HSM (one HMAC with the root per scope and epoch), by result.',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });
  private readonly ticketKeyScopes = new Set<string>();

  private readonly signCounterChildren = new Map<string, client.Counter.Internal>();
  private readonly unaryDuration = this.requestDuration.labels('Sign');
  private readonly streamDuration = this.requestDuration.labels('SignStream');

  constructor(source: PoolGaugeSource) {
    client.collectDefaultMetrics({ register: this.registry, prefix: 'hsmgw_' });
    const gauge = (name: string, help: string, read: () => number): void => {
      new client.Gauge({ name, help, registers: [this.registry], collect() { this.set(read()); } });
    };
    gauge('hsmgw_pool_sessions', 'PKCS#11 sessions open in the pool (idle + in use).', () => source.poolStats.size);
    gauge('hsmgw_pool_sessions_in_use', 'Pooled sessions lent to a sign request right now.', () => source.poolStats.inUse);
    gauge('hsmgw_pool_sessions_max', 'Configured maximum pool size (pkcs11.sessions.max).', () => source.poolStats.max);
    gauge('hsmgw_pool_waiting_requests', 'Sign requests waiting for a free session.', () => source.poolStats.waiting);
    gauge('hsmgw_hsm_ready', '1 while the token is logged in and sessions can be had; 0 otherwise.', () => (source.ready ? 1 : 0));
    new client.Gauge({
      name: 'hsmgw_sign_threads',
      help: 'Sign threads (pkcs11.signThreads), by state: total, and busy (holding a session with work queued or running, or quarantined behind a stuck call).',
      labelNames: ['state'] as const,
      registers: [this.registry],
      collect() {
        const threads = source.signThreads;
        this.labels('total').set(threads.total);
        this.labels('busy').set(threads.busy);
      },
    });
    this.droppedLogLines.labels('audit').inc(0);
    this.droppedLogLines.labels('other').inc(0);
  }

  /** The in-flight gauge, read from the sign pipeline at scrape time. */
  watchInFlight(source: InFlightSource): void {
    new client.Gauge({
      name: 'hsmgw_in_flight_requests', help: 'Sign requests being handled now (queued for a sign thread or signing).',
      registers: [this.registry], collect() { this.set(source.requestsInFlight); },
    });
  }

  /** The gauges of the gRPC port: handshakes in progress and authenticated connections. */
  watchConnections(source: ConnectionGaugeSource): void {
    new client.Gauge({
      name: 'hsmgw_tls_handshakes_in_progress', help: 'Connections to the gRPC port that have not finished their TLS handshake (limits.maxHandshakes).',
      registers: [this.registry], collect() { this.set(source.stats.handshakes); },
    });
    new client.Gauge({
      name: 'hsmgw_tls_connections', help: 'Open connections to the gRPC port with a verified client certificate.',
      registers: [this.registry], collect() { this.set(source.stats.connections); },
    });
  }

  /** Open WatchTicketKeys streams. */
  watchTicketKeyWatchers(source: { readonly size: number }): void {
    new client.Gauge({
      name: 'hsmgw_ticket_key_watchers', help: 'Open WatchTicketKeys streams (TLS servers following a scope\'s session-ticket keys).',
      registers: [this.registry], collect() { this.set(source.size); },
    });
  }

  ticketKeyFetch(scope: string, result: string): void {
    if (!this.ticketKeyScopes.has(scope) && this.ticketKeyScopes.size < 100) this.ticketKeyScopes.add(scope);
    this.ticketKeyFetches.labels(this.ticketKeyScopes.has(scope) ? scope : 'other', result).inc();
  }

  ticketKeyDerived(ok: boolean): void { this.ticketKeyDerivations.labels(ok ? 'ok' : 'failed').inc(); }

  signAnswered(key: string, algorithm: string, code: string, seconds: number, rpc: 'Sign' | 'SignStream'): void {
    const id = `${key}\u0000${algorithm}\u0000${code}`;
    let child = this.signCounterChildren.get(id);
    if (!child) {
      child = this.signRequests.labels(key, algorithm, code);
      this.signCounterChildren.set(id, child);
    }
    child.inc();
    (rpc === 'Sign' ? this.unaryDuration : this.streamDuration).observe(seconds);
  }

  hsmTimings(waitSeconds: number, hsmSeconds: number): void {
    this.sessionWait.observe(waitSeconds);
    this.hsmOperation.observe(hsmSeconds);
  }

  hsmError(ckr: string): void { this.hsmErrors.labels(ckr).inc(); }
  authorizationDenied(reason: string): void { this.authzDenials.labels(reason).inc(); }
  /** Per identity, up to 1000 distinct ones (a wildcard rule could match many); then "other". */
  rateLimited(identity: string): void {
    if (!this.rateLimitedIdentities.has(identity) && this.rateLimitedIdentities.size < 1000) this.rateLimitedIdentities.add(identity);
    this.rateLimitedRequests.labels(this.rateLimitedIdentities.has(identity) ? identity : 'other').inc();
  }

  tlsHandshakeFailed(reason: string): void { this.tlsHandshakeFailures.labels(reason).inc(); }
  connectionRefused(reason: string): void { this.connectionsRefused.labels(reason).inc(); }
  connectionClosed(reason: string): void { this.connectionsClosed.labels(reason).inc(); }
  logWritesDeferred(count: number): void { this.deferredLogWrites.inc(count); }
  logLinesDropped(lines: number, auditLines: number): void {
    if (auditLines) this.droppedLogLines.labels('audit').inc(auditLines);
    if (lines > auditLines) this.droppedLogLines.labels('other').inc(lines - auditLines);
  }
  clientCrlNextUpdate(unixSeconds: number | undefined): void {
    if (unixSeconds === undefined) this.crlNextUpdate.reset();
    else this.crlNextUpdate.set(unixSeconds);
  }
  configReload(what: 'config' | 'tls', ok: boolean): void { this.configReloads.labels(what, ok ? 'ok' : 'failed').inc(); }
  reconnectAttempt(ok: boolean): void { this.reconnects.labels(ok ? 'ok' : 'failed').inc(); }
  loginAttempt(ok: boolean): void { this.logins.labels(ok ? 'ok' : 'failed').inc(); }
  sessionDiscarded(reason: string): void { this.sessionsDiscarded.labels(reason).inc(); }
  signThreadReplaced(cause: 'stuck' | 'died'): void { this.signThreadReplacements.labels(cause).inc(); }
  serverCertificateExpiry(unixSeconds: number): void { this.certificateExpiry.set(unixSeconds); }
}
