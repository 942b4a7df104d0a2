import * as fs from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { GatewayClient } from '../../client/gateway-client';
import type { GatewayClientOptions } from '../../client/gateway-client-options';
import { SignerClient } from '../../proto/generated/hsmgateway/v1/signer';
import { stringify as toYaml } from 'yaml';
import { buildConfig, loadConfigFile } from '../../server/config/load-config';
import type { GatewayConfig } from '../../server/config/gateway-config';
import { Gateway } from '../../server/gateway';
import { Logger } from '../../server/observability/logger';
import { buildFaultyModule, type FaultController } from '../faulty-pkcs11/faulty-module';
import { EXTRA_KEYS, IDENTITIES, testEnvironment, type ClientIdentity, type TestEnvironment } from './test-environment';

export interface TestGatewayOptions {
  /** Merged over the test config's pkcs11 section. */
  pkcs11?: Record<string, unknown>;
  limits?: Record<string, unknown>;
  logging?: Record<string, unknown>;
  shutdown?: Record<string, unknown>;
  /** Replaces the keys section. */
  keys?: Array<Record<string, string>>;
  /** Merged over the tls section (cert, key, clientCa). */
  tls?: Record<string, string>;
  /** Replaces the authorization section. */
  authorization?: Record<string, unknown>;
  /** The ticketKeys section (absent: the TicketKeys service is not offered). */
  ticketKeys?: Record<string, unknown>;
  /** Write the config to this YAML file and watch it (live reload), polling at watchIntervalMs. */
  configFile?: string;
  watchIntervalMs?: number;
}

export interface TestGateway {
  env: TestEnvironment;
  config: GatewayConfig;
  gateway: Gateway;
  endpoint: string;
  metricsUrl: string;
  /** A GatewayClient for one of the test identities (no retries, so codes are exact). */
  client(identity?: keyof TestEnvironment['pki']['clients'], options?: Partial<GatewayClientOptions>): GatewayClient;
  /** The generated grpc-js client, for SignStream and raw calls. */
  rawClient(identity?: keyof TestEnvironment['pki']['clients']): SignerClient;
  stop(): Promise<void>;
}

export const ALL_TEST_KEYS = ['dev-ec', 'dev-rsa', ...EXTRA_KEYS.map((k) => k.name)];

/** The document a test gateway is configured with (listening on ephemeral loopback ports). */
export function testConfigDocument(env: TestEnvironment, options: TestGatewayOptions = {}): Record<string, unknown> {
  return {
    pkcs11: {
      module: env.modulePath,
      environment: { SOFTHSM2_CONF: env.softhsmConf },
      token: { label: env.tokenLabel },
      pin: { file: env.pinFile },
      ...options.pkcs11,
    },
    keys: options.keys ?? ALL_TEST_KEYS.map((name) => ({ name, label: name })),
    listen: { grpc: '127.0.0.1:0', http: '127.0.0.1:0' },
    tls: { cert: env.pki.serverCert, key: env.pki.serverKey, clientCa: env.pki.ca, ...options.tls },
    authorization: options.authorization ?? {
      rules: [
        { identity: IDENTITIES.dev, keys: ALL_TEST_KEYS },
        { identity: IDENTITIES.pssOnly, keys: ['dev-rsa'], algorithms: ['RSA_PSS_SHA256'] },
        { identity: 'spiffe://hsm-gateway.test/wild/*', keys: ['test-*'] },
        { identity: IDENTITIES.dnsOnly, keys: ['dev-rsa'] },
      ],
    },
    ...(options.ticketKeys ? { ticketKeys: options.ticketKeys } : {}),
    limits: options.limits ?? {},
    logging: { level: 'warn', audit: false, ...options.logging },
    shutdown: { graceMs: 2000, ...options.shutdown },
  };
}

function readIdentity(identity: ClientIdentity): { cert: Buffer; key: Buffer } {
  return { cert: fs.readFileSync(identity.cert), key: fs.readFileSync(identity.key) };
}

export async function startTestGateway(options: TestGatewayOptions = {}, logger = new Logger('error')): Promise<TestGateway> {
  const env = await testEnvironment();
  const document = testConfigDocument(env, options);
  let config: GatewayConfig;
  if (options.configFile) {
    fs.writeFileSync(options.configFile, toYaml(document));
    config = loadConfigFile(options.configFile, {});
  } else {
    config = buildConfig(document, env.stateDir, {});
  }
  const gateway = await Gateway.start(config, logger, { configFile: options.configFile, watchIntervalMs: options.watchIntervalMs ?? 0 });
  const endpoint = `localhost:${gateway.grpcPort}`;
  const ca = fs.readFileSync(env.pki.ca);
  const clients: Array<{ close(): void }> = [];
  return {
    env,
    config,
    gateway,
    endpoint,
    metricsUrl: `http://127.0.0.1:${gateway.httpPort}/metrics`,
    client(identity = 'dev', extra = {}) {
      const c = new GatewayClient({ endpoints: [endpoint], ca, ...readIdentity(env.pki.clients[identity]), maxRetries: 0, deadlineMs: 10_000, ...extra });
      clients.push(c);
      return c;
    },
    rawClient(identity = 'dev') {
      const { cert, key } = readIdentity(env.pki.clients[identity]);
      const c = new SignerClient(endpoint, grpc.credentials.createSsl(ca, key, cert));
      clients.push(c);
      return c;
    },
    async stop() {
      for (const c of clients) c.close();
      await gateway.stop();
    },
  };
}

let loadedFaults: FaultController | undefined;

/**
 * A gateway on the fault-injecting PKCS#11 module, forwarding to the test SoftHSM token. The
 * module reads its control-file path once per process, so a test file uses one FaultController.
 */
export async function startFaultyGateway(faults: FaultController, options: TestGatewayOptions = {}, logger?: Logger): Promise<TestGateway> {
  if (loadedFaults && loadedFaults !== faults) throw new Error('the faulty module is already loaded with another FaultController in this process: share one per test file');
  loadedFaults = faults;
  const env = await testEnvironment();
  return startTestGateway({
    ...options,
    pkcs11: { module: buildFaultyModule(), environment: { SOFTHSM2_CONF: env.softhsmConf, ...faults.env() }, ...options.pkcs11 },
  }, logger);
}
