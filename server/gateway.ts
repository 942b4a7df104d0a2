import * as path from 'node:path';
import type { AddressInfo } from 'node:net';
import type * as http from 'node:http';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation } from 'grpc-health-check';
import * as fs from 'node:fs';
import { AccessPolicy, AccessPolicyHolder } from './auth/access-policy';
import { loadConfigFile, parseListenAddress } from './config/load-config';
import type { GatewayConfig } from './config/gateway-config';
import { readPin } from './config/read-pin';
import { AuditLog } from './observability/audit-log';
import { createOpsServer } from './observability/http-server';
import type { Logger } from './observability/logger';
import { GatewayMetrics } from './observability/metrics';
import { Hsm, type HsmObserver } from './pkcs11/hsm';
import { SignPipeline } from './rpc/sign-pipeline';
import { createSignerService } from './rpc/signer-service';
import { TolerantSignerService } from './rpc/tolerant-service-definition';
import { GrpcTlsListener, type ListenerObserver } from './tls/grpc-tls-listener';
import { loadTlsMaterial, type LoadedTlsMaterial } from './tls/tls-material';
import { SignStreamRegistry } from './rpc/sign-stream';
import { addTicketKeysService, openTicketKeySource } from './tickets/ticket-keys-setup';
import type { TicketKeyWatchers } from './tickets/ticket-key-watchers';
import { errorMessage } from '../common/errors';

const SIGNER_SERVICE_NAME = 'hsmgateway.v1.Signer';
export const PROTO_ROOT = path.resolve(__dirname, '..', '..', 'proto');

function hsmObserver(logger: Logger, metrics: () => GatewayMetrics | undefined, onState: (ready: boolean) => void): HsmObserver {
  return {
    stateChanged: (state, reason) => {
      logger[state === 'ready' ? 'info' : 'warn']('HSM state changed', { state, reason });
      onState(state === 'ready');
    },
    hsmError: (ckr) => metrics()?.hsmError(ckr),
    reconnectAttempt: (ok, error) => {
      metrics()?.reconnectAttempt(ok);
      logger[ok ? 'info' : 'warn']('HSM reconnect attempt', { ok, error });
    },
    loginAttempt: (ok, error) => {
      metrics()?.loginAttempt(ok);
      logger[ok ? 'info' : 'warn']('token re-login attempt', { ok, error });
    },
    sessionDiscarded: (reason) => metrics()?.sessionDiscarded(reason),
    signThreadReplaced: (reason) => {
      metrics()?.signThreadReplaced(reason === 'stuck' ? 'stuck' : 'died');
      logger.warn('sign thread replaced', { reason });
    },
    keyWarning: (w) => logger.warn(w.message, { key: w.key }),
  };
}

function listenerObserver(logger: Logger, metrics: GatewayMetrics): ListenerObserver {
  return {
    connectionRefused: (reason) => metrics.connectionRefused(reason),
    handshakeFailed: (reason) => metrics.tlsHandshakeFailed(reason),
    connectionClosed: (reason, connection) => {
      metrics.connectionClosed(reason);
      logger.warn('connection closed: its client certificate is no longer accepted', {
        reason, identity: connection.identity?.label, peer: `${connection.socket.remoteAddress}:${connection.socket.remotePort}`,
      });
    },
  };
}

/** The TLS material's figures the metrics show. */
function recordTlsMaterial(metrics: GatewayMetrics, material: LoadedTlsMaterial): void {
  metrics.serverCertificateExpiry(material.notAfter.getTime() / 1000);
  const crlNextUpdate = material.trust.crlNextUpdate;
  metrics.clientCrlNextUpdate(crlNextUpdate && crlNextUpdate.getTime() / 1000);
}

export interface GatewayStartOptions {
  /** The file the config came from: reloaded on SIGHUP and when it changes. */
  configFile?: string;
  /** How often watched files are polled for changes, ms (0 disables watching). */
  watchIntervalMs?: number;
}

/** Fields a live reload applies; anything else changed in the file needs a restart. */
const LIVE_FIELDS = new Set(['keys', 'authorization', 'baseDir', 'environmentOverrides']);

function changedRestartFields(a: GatewayConfig, b: GatewayConfig): string[] {
  return (Object.keys(b) as Array<keyof GatewayConfig>).filter((k) => !LIVE_FIELDS.has(k) && JSON.stringify(a[k]) !== JSON.stringify(b[k]));
}

/** One running gateway: the HSM, the mTLS gRPC server and the operations HTTP server. */
export class Gateway {
  private stopping: Promise<void> | undefined;
  private readonly watched: string[] = [];
  private reloadTimer: NodeJS.Timeout | undefined;

  private constructor(
    private config: GatewayConfig,
    private readonly options: GatewayStartOptions,
    private readonly policy: AccessPolicyHolder,
    private readonly streams: SignStreamRegistry,
    private readonly logger: Logger,
    readonly hsm: Hsm,
    readonly metrics: GatewayMetrics,
    private readonly grpcServer: grpc.Server,
    private readonly health: HealthImplementation,
    private readonly listener: GrpcTlsListener,
    private readonly audit: AuditLog | undefined,
    private readonly opsServer: http.Server,
    readonly grpcPort: number,
    readonly httpPort: number,
    private readonly ticketWatchers: TicketKeyWatchers | undefined,
  ) {}

  static async start(config: GatewayConfig, logger: Logger, options: GatewayStartOptions = {}): Promise<Gateway> {
    for (const o of config.environmentOverrides) {
      // The listen addresses decide who can reach the ports (the metrics port has no authentication).
      logger[o.field.startsWith('listen.') ? 'warn' : 'info']('an environment variable overrides the config file', { env: o.env, field: o.field, file: o.fileValue, value: o.value });
    }
    const pin = readPin(config.pkcs11.pin, process.env, (message) => logger.warn(message));
    // The module reads its own configuration from the environment when it is initialised.
    Object.assign(process.env, config.pkcs11.environment);
    const health = new HealthImplementation({ '': 'NOT_SERVING', [SIGNER_SERVICE_NAME]: 'NOT_SERVING' });
    const setServing = (ready: boolean): void => {
      const s = ready ? 'SERVING' : 'NOT_SERVING';
      health.setStatus('', s);
      health.setStatus(SIGNER_SERVICE_NAME, s);
    };
    // The HSM reports to the metrics, which read the HSM's pool: the observer finds them once they exist.
    let metricsOnceBuilt: GatewayMetrics | undefined;
    const hsm = new Hsm(config.pkcs11, config.keys, pin, hsmObserver(logger, () => metricsOnceBuilt, setServing));
    const metrics = new GatewayMetrics(hsm);
    metricsOnceBuilt = metrics;
    logger.observe({ writesDeferred: (n) => metrics.logWritesDeferred(n), linesDropped: (n, audit) => metrics.logLinesDropped(n, audit) });
    await hsm.start();
    let ticketKeys;
    try {
      ticketKeys = config.ticketKeys && openTicketKeySource(hsm, config.ticketKeys, metrics, logger);
    } catch (err) {
      await hsm.close(0);
      throw err;
    }
    logger.info('HSM ready', { module: config.pkcs11.module, token: config.pkcs11.token.label ?? config.pkcs11.token.serial, keys: hsm.keys().map((k) => k.name).join(',') });

    const material = loadTlsMaterial(config.tls);
    recordTlsMaterial(metrics, material);

    const server = new grpc.Server({
      'grpc.max_receive_message_length': config.limits.maxReceiveMessageBytes,
      'grpc.max_send_message_length': 4 * 1024 * 1024,
      'grpc.max_concurrent_streams': config.limits.maxConcurrentStreams,
      'grpc.keepalive_time_ms': 60_000,
      'grpc.keepalive_timeout_ms': 20_000,
      'grpc.keepalive_permit_without_calls': 1,
      'grpc.http2.min_ping_interval_without_data_ms': 10_000,
      'grpc.max_connection_age_ms': config.limits.maxConnectionAgeMs,
      'grpc.max_connection_age_grace_ms': config.limits.maxConnectionAgeGraceMs,
      'grpc-node.max_session_memory': config.limits.maxSessionMemoryMb,
    });
    // TLS is the listener's (caps, client certificates, revocation); grpc-js gets the sockets it authenticated.
    const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
    const listener = new GrpcTlsListener(material, config.limits, listenerObserver(logger, metrics), (socket) => injector.injectConnection(socket));
    metrics.watchConnections(listener);
    const policy = new AccessPolicyHolder(new AccessPolicy(config.authorization.rules));
    const audit = config.logging.audit ? new AuditLog(logger) : undefined;
    const pipeline = new SignPipeline(hsm, policy, config.limits, metrics, logger, audit);
    metrics.watchInFlight(pipeline);
    const streams = new SignStreamRegistry(config.limits);
    server.addService(TolerantSignerService, createSignerService({
      hsm, policy, streams, connections: listener, pipeline, limits: config.limits, metrics, logger,
    }));
    const ticketWatchers = ticketKeys && addTicketKeysService(server, { source: ticketKeys, policy, connections: listener, metrics, audit, logger });
    health.addToServer(server);
    const definition = protoLoader.loadSync(['signer.proto', 'ticket_keys.proto'].map((f) => path.join(PROTO_ROOT, 'hsmgateway', 'v1', f)), { includeDirs: [PROTO_ROOT] });
    new ReflectionService(definition).addToServer(server);

    const grpcAddr = parseListenAddress('listen.grpc', config.listen.grpc);
    const grpcPort = await listener.listen(grpcAddr.host, grpcAddr.port).catch((err: Error) => {
      throw new Error(`listen.grpc: cannot listen on ${config.listen.grpc}: ${err.message}`);
    });
    setServing(hsm.ready);

    const ops = createOpsServer(metrics.registry, hsm, logger);
    const httpAddr = parseListenAddress('listen.http', config.listen.http);
    await new Promise<void>((resolve, reject) => {
      ops.once('error', (err) => reject(new Error(`listen.http: cannot listen on ${config.listen.http}: ${err.message}`)));
      ops.listen(httpAddr.port, httpAddr.host, () => resolve());
    });
    const httpPort = (ops.address() as AddressInfo).port;
    logger.info('gateway listening', { grpc: `${grpcAddr.host}:${grpcPort}`, http: `${httpAddr.host}:${httpPort}` });
    const gateway = new Gateway(config, options, policy, streams, logger, hsm, metrics, server, health, listener, audit, ops, grpcPort, httpPort, ticketWatchers);
    gateway.watchFiles();
    return gateway;
  }

  /** Polls the config and TLS files; a change triggers the same reload as SIGHUP, debounced. */
  private watchFiles(): void {
    const interval = this.options.watchIntervalMs ?? 1000;
    if (interval <= 0) return;
    const files = [this.options.configFile, this.config.tls.cert, this.config.tls.key, this.config.tls.clientCa, this.config.tls.crl].filter((f): f is string => !!f);
    for (const file of new Set(files)) {
      fs.watchFile(file, { interval, persistent: false }, (curr, prev) => {
        if (curr.mtimeMs === prev.mtimeMs && curr.ino === prev.ino && curr.size === prev.size) return;
        if (this.reloadTimer) clearTimeout(this.reloadTimer);
        this.reloadTimer = setTimeout(() => this.reload(`${file} changed`), 200);
      });
      this.watched.push(file);
    }
  }

  /**
   * SIGHUP or a watched file changed: re-read the config (keys, aliases, authorization and rate
   * limits apply live), the TLS files (new handshakes use them; open connections whose client
   * certificate no longer passes are closed) and the certificate chains on the token. Anything
   * invalid is refused whole and the running configuration keeps serving.
   */
  reload(reason = 'SIGHUP'): void {
    this.logger.info('reloading', { reason });
    this.reloadConfig();
    this.reloadTls();
    try {
      this.hsm.refreshCertificates();
    } catch (err) {
      this.logger.error('certificate chain refresh failed', { error: errorMessage(err) });
    }
  }

  private reloadConfig(): void {
    const file = this.options.configFile;
    if (!file) return;
    try {
      const next = loadConfigFile(file);
      const restartOnly = changedRestartFields(this.config, next);
      if (JSON.stringify(next.keys) !== JSON.stringify(this.config.keys)) this.hsm.reloadKeys(next.keys);
      // An unchanged policy is kept whole; a changed one keeps the rate-limit buckets of unchanged rules.
      if (JSON.stringify(next.authorization) !== JSON.stringify(this.config.authorization)) {
        this.policy.current = new AccessPolicy(next.authorization.rules, this.policy.current);
        this.ticketWatchers?.revokeUngranted();
      }
      this.config = { ...this.config, keys: next.keys, authorization: next.authorization };
      this.metrics.configReload('config', true);
      this.logger.info('configuration reloaded', { keys: next.keys.map((k) => k.name).join(','), rules: next.authorization.rules.length });
      if (restartOnly.length) this.logger.warn('some changed settings apply only after a restart', { fields: restartOnly.join(',') });
    } catch (err) {
      this.metrics.configReload('config', false);
      this.logger.error('configuration reload rejected; the running configuration keeps serving', { error: errorMessage(err) });
    }
  }

  private reloadTls(): void {
    try {
      const material = loadTlsMaterial(this.config.tls);
      this.listener.reload(material);
      recordTlsMaterial(this.metrics, material);
      this.metrics.configReload('tls', true);
      this.logger.info('TLS material reloaded', { cert: this.config.tls.cert });
    } catch (err) {
      this.metrics.configReload('tls', false);
      this.logger.error('TLS reload rejected; the previous certificate keeps serving', { error: errorMessage(err) });
    }
  }

  /**
   * Graceful stop: report NOT_SERVING, stop accepting, let in-flight calls finish within the
   * grace period, then close the sessions and finalize the module.
   */
  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    const grace = this.config.shutdown.graceMs;
    for (const file of this.watched) fs.unwatchFile(file);
    if (this.reloadTimer) clearTimeout(this.reloadTimer);
    this.health.setStatus('', 'NOT_SERVING');
    this.health.setStatus(SIGNER_SERVICE_NAME, 'NOT_SERVING');
    this.logger.info('shutting down', { graceMs: grace });
    this.listener.close();
    // Long-lived SignStreams would hold tryShutdown until the grace period ends: finish their
    // in-flight items, refuse new ones with UNAVAILABLE (clients fail over), then end them.
    this.streams.drainAll();
    this.ticketWatchers?.closeAll();
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.logger.warn('grace period over; cancelling remaining calls');
        this.grpcServer.forceShutdown();
        resolve();
      }, grace);
      this.grpcServer.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    this.listener.destroyAll();
    this.audit?.close();
    await this.hsm.close(Math.min(grace, 2000));
    await new Promise<void>((resolve) => {
      this.opsServer.close(() => resolve());
      this.opsServer.closeAllConnections();
    });
    this.logger.info('stopped');
    this.logger.flush();
  }
}
