import * as path from 'node:path';
import type { AddressInfo } from 'node:net';
import type * as http from 'node:http';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation } from 'grpc-health-check';
import { SignerService } from '../proto/generated/hsmgateway/v1/signer';
import { Authorizer } from './auth/authorizer';
import { IdentityCache } from './auth/peer-identity';
import { parseListenAddress } from './config/load-config';
import type { GatewayConfig } from './config/gateway-config';
import { readPin } from './config/read-pin';
import { createOpsServer } from './observability/http-server';
import type { Logger } from './observability/logger';
import { GatewayMetrics } from './observability/metrics';
import { Hsm, type HsmObserver } from './pkcs11/hsm';
import { SignPipeline } from './rpc/sign-pipeline';
import { createSignerService } from './rpc/signer-service';
import { loadTlsMaterial, ReloadableServerCredentials } from './tls/server-credentials';

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
    keyWarning: (w) => logger.warn(w.message, { key: w.key }),
  };
}

/** One running gateway: the HSM, the mTLS gRPC server and the operations HTTP server. */
export class Gateway {
  private stopping: Promise<void> | undefined;

  private constructor(
    private readonly config: GatewayConfig,
    private readonly logger: Logger,
    readonly hsm: Hsm,
    readonly metrics: GatewayMetrics,
    private readonly grpcServer: grpc.Server,
    private readonly health: HealthImplementation,
    private readonly credentials: ReloadableServerCredentials,
    private readonly opsServer: http.Server,
    readonly grpcPort: number,
    readonly httpPort: number,
  ) {}

  static async start(config: GatewayConfig, logger: Logger): Promise<Gateway> {
    const pin = readPin(config.pkcs11.pin);
    // The module reads its own configuration from the environment when it is initialised.
    Object.assign(process.env, config.pkcs11.environment);
    const health = new HealthImplementation({ '': 'NOT_SERVING', [SIGNER_SERVICE_NAME]: 'NOT_SERVING' });
    const setServing = (ready: boolean): void => {
      const s = ready ? 'SERVING' : 'NOT_SERVING';
      health.setStatus('', s);
      health.setStatus(SIGNER_SERVICE_NAME, s);
    };
    let metrics: GatewayMetrics | undefined;
    const hsm = new Hsm(config.pkcs11, config.keys, pin, hsmObserver(logger, () => metrics, setServing));
    metrics = new GatewayMetrics(hsm);
    await hsm.start();
    logger.info('HSM ready', { module: config.pkcs11.module, token: config.pkcs11.token.label ?? config.pkcs11.token.serial, keys: hsm.keys().map((k) => k.name).join(',') });

    const material = loadTlsMaterial(config.tls);
    metrics.serverCertificateExpiry(material.notAfter.getTime() / 1000);
    const credentials = new ReloadableServerCredentials(material);

    const server = new grpc.Server({
      'grpc.max_receive_message_length': config.limits.maxReceiveMessageBytes,
      'grpc.max_send_message_length': 4 * 1024 * 1024,
      'grpc.max_concurrent_streams': config.limits.maxConcurrentStreams,
      'grpc.keepalive_time_ms': 60_000,
      'grpc.keepalive_timeout_ms': 20_000,
      'grpc.keepalive_permit_without_calls': 1,
      'grpc.http2.min_ping_interval_without_data_ms': 10_000,
    });
    const authorizer = new Authorizer(config.authorization.rules);
    const pipeline = new SignPipeline(hsm, authorizer, config.limits, metrics, logger, config.logging.audit);
    server.addService(SignerService, createSignerService({
      hsm, authorizer, identities: new IdentityCache(), pipeline, limits: config.limits, metrics,
    }));
    health.addToServer(server);
    const definition = protoLoader.loadSync(path.join(PROTO_ROOT, 'hsmgateway', 'v1', 'signer.proto'), { includeDirs: [PROTO_ROOT] });
    new ReflectionService(definition).addToServer(server);

    const grpcAddr = parseListenAddress('listen.grpc', config.listen.grpc);
    const grpcPort = await new Promise<number>((resolve, reject) => {
      const host = grpcAddr.host.includes(':') ? `[${grpcAddr.host}]` : grpcAddr.host;
      server.bindAsync(`${host}:${grpcAddr.port}`, credentials, (err, port) => (err ? reject(new Error(`listen.grpc: cannot listen on ${config.listen.grpc}: ${err.message}`)) : resolve(port)));
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
    return new Gateway(config, logger, hsm, metrics, server, health, credentials, ops, grpcPort, httpPort);
  }

  /** SIGHUP: new TLS material for new connections, and fresh certificate chains from the token. */
  reload(): void {
    try {
      const material = loadTlsMaterial(this.config.tls);
      this.credentials.reload(material);
      this.metrics.serverCertificateExpiry(material.notAfter.getTime() / 1000);
      this.logger.info('TLS material reloaded', { cert: this.config.tls.cert });
    } catch (err) {
      this.logger.error('TLS reload rejected; the previous certificate keeps serving', { error: (err as Error).message });
    }
    try {
      this.hsm.refreshCertificates();
    } catch (err) {
      this.logger.error('certificate chain refresh failed', { error: (err as Error).message });
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
    this.health.setStatus('', 'NOT_SERVING');
    this.health.setStatus(SIGNER_SERVICE_NAME, 'NOT_SERVING');
    this.logger.info('shutting down', { graceMs: grace });
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
    await this.hsm.close(Math.min(grace, 2000));
    await new Promise<void>((resolve) => {
      this.opsServer.close(() => resolve());
      this.opsServer.closeAllConnections();
    });
    this.logger.info('stopped');
    this.logger.flush();
  }
}
