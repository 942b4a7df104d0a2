/**
 * A gateway in its own process (`hsm-gateway serve --config FILE`), for tests whose client
 * blocks its own event loop (keyless TLS) or that stop, kill and restart the gateway.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { stringify as toYaml, parse as parseYaml } from 'yaml';
import { GatewayClient } from '../../client/gateway-client';
import type { GatewayClientOptions } from '../../client/gateway-client-options';
import { REPO_ROOT, testEnvironment, type TestEnvironment } from './test-environment';
import { testConfigDocument, type TestGatewayOptions } from './test-gateway';
import { freePort } from './free-port';

const CLI = path.join(REPO_ROOT, 'bin', 'hsm-gateway.js');

export interface GatewayProcess {
  env: TestEnvironment;
  configFile: string;
  /** localhost:PORT (the same port across restarts). */
  endpoint: string;
  grpcPort: number;
  metricsUrl: string;
  output(): string;
  pid(): number | undefined;
  /** A client for a test identity; closed by stop(). */
  client(identity?: keyof TestEnvironment['pki']['clients'], extra?: Partial<GatewayClientOptions>): GatewayClient;
  /** Options for a GatewayClient (e.g. one made elsewhere). */
  clientOptions(identity?: keyof TestEnvironment['pki']['clients']): GatewayClientOptions;
  editConfig(edit: (doc: Record<string, unknown>) => void): void;
  signal(sig: NodeJS.Signals): void;
  /** SIGTERM and wait for exit; returns the exit code. */
  terminate(): Promise<number | null>;
  /** SIGKILL and wait. */
  kill(): Promise<void>;
  /** Start again on the same ports after terminate()/kill(). */
  restart(): Promise<void>;
  stop(): Promise<void>;
}


export interface GatewayProcessOptions extends TestGatewayOptions {
  extraEnv?: Record<string, string>;
  /** The gateway's stdout (its log) goes to this file descriptor instead of a pipe read by the test. */
  stdoutFd?: number;
}

/** Polls /readyz until it answers 200. */
async function untilReady(url: string, exited: () => boolean): Promise<void> {
  while (!exited()) {
    if (await fetch(url).then((r) => r.status === 200, () => false)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
}

export async function startGatewayProcess(options: GatewayProcessOptions = {}): Promise<GatewayProcess> {
  const env = await testEnvironment();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hsmgw-proc-'));
  const configFile = path.join(dir, 'config.yaml');
  const grpcPort = await freePort();
  const httpPort = await freePort();
  const doc = testConfigDocument(env, options);
  doc.listen = { grpc: `127.0.0.1:${grpcPort}`, http: `127.0.0.1:${httpPort}` };
  doc.logging = { level: 'info', audit: false, ...(options.logging ?? {}) };
  fs.writeFileSync(configFile, toYaml(doc));

  let child: ChildProcess | undefined;
  let out = '';
  const clients: GatewayClient[] = [];

  const launch = (): Promise<void> => new Promise((resolve, reject) => {
    const started = out.length;
    // HSMGW_GATEWAY_NODE: the node the gateway runs on when the tests run on another one
    // (the gateway's pkcs11js is built for the Node that ran `npm ci`).
    child = spawn(process.env['HSMGW_GATEWAY_NODE'] ?? process.execPath, [CLI, 'serve', '--config', configFile], {
      env: { ...process.env, HSMGW_CONFIG: '', ...options.extraEnv },
      stdio: ['ignore', options.stdoutFd ?? 'pipe', 'pipe'],
    });
    const timer = setTimeout(() => reject(new Error(`gateway did not start:\n${out.slice(started)}`)), 30_000);
    if (options.stdoutFd !== undefined) {
      const c = child as ChildProcess;
      void untilReady(`http://127.0.0.1:${httpPort}/readyz`, () => c.exitCode !== null).then(() => { clearTimeout(timer); resolve(); });
    }
    const onData = (b: Buffer): void => {
      out += b.toString();
      if (out.slice(started).includes('"msg":"gateway listening"')) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`gateway exited with ${code}:\n${out.slice(started)}`));
    });
  });

  const waitExit = (sig: NodeJS.Signals): Promise<number | null> => new Promise((resolve) => {
    const c = child;
    if (!c || c.exitCode !== null || c.signalCode !== null) {
      resolve(c?.exitCode ?? null);
      return;
    }
    c.removeAllListeners('exit');
    c.once('exit', (code) => resolve(code));
    c.kill(sig);
  });

  await launch();
  const endpoint = `localhost:${grpcPort}`;
  const clientOptions = (identity: keyof TestEnvironment['pki']['clients'] = 'dev'): GatewayClientOptions => ({
    endpoints: [endpoint],
    ca: fs.readFileSync(env.pki.ca, 'utf8'),
    cert: fs.readFileSync(env.pki.clients[identity].cert, 'utf8'),
    key: fs.readFileSync(env.pki.clients[identity].key, 'utf8'),
  });
  return {
    env,
    configFile,
    endpoint,
    grpcPort,
    metricsUrl: `http://127.0.0.1:${httpPort}/metrics`,
    output: () => out,
    pid: () => child?.pid,
    clientOptions,
    client(identity = 'dev', extra = {}) {
      const c = new GatewayClient({ ...clientOptions(identity), maxRetries: 0, ...extra });
      clients.push(c);
      return c;
    },
    editConfig(edit) {
      const d = parseYaml(fs.readFileSync(configFile, 'utf8')) as Record<string, unknown>;
      edit(d);
      fs.writeFileSync(`${configFile}.tmp`, toYaml(d));
      fs.renameSync(`${configFile}.tmp`, configFile);
    },
    signal: (sig) => { child?.kill(sig); },
    terminate: () => waitExit('SIGTERM'),
    kill: async () => { await waitExit('SIGKILL'); },
    restart: launch,
    async stop() {
      await Promise.all(clients.map((c) => c.close()));
      await waitExit('SIGTERM');
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
