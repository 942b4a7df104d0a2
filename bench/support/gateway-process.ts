/**
 * The gateway under test, in its own process: `node bin/hsm-gateway.js serve --config FILE`,
 * with a config written the way the tests write theirs (testConfigDocument) and pointing at the
 * shared fixture prepared by test/support/test-environment.
 */
import './bench-state';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { IDENTITIES, testEnvironment, REPO_ROOT, type TestEnvironment } from '../../test/support/test-environment';
import { testConfigDocument, type TestGatewayOptions } from '../../test/support/test-gateway';
import { memory, processCpuMicros, threadCpuMicros } from './proc-stats';
import type { ServerCounters, ServerUnderTest } from './server-under-test';
import { freePort } from '../../test/support/free-port';

export { freePort };

export interface GatewayProcessOptions extends TestGatewayOptions {
  /** Extra node flags for the gateway process (e.g. --cpu-prof). */
  execArgv?: string[];
  /** Where the gateway's stderr goes. */
  logFile: string;
  /** Session-ticket key scopes granted to the bench client (with a ticketKeys section). */
  ticketKeyScopes?: string[];
}


/** The embedded default's keys (server/bootstrap/embedded-default.ts). */
export const BENCH_KEYS = ['dev-ec', 'dev-rsa'];

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class GatewayProcess implements ServerUnderTest {
  private constructor(
    readonly env: TestEnvironment,
    private readonly child: ChildProcess,
    readonly endpoint: string,
    readonly metricsUrl: string,
    readonly configFile: string,
  ) {}

  static async start(workDir: string, options: GatewayProcessOptions): Promise<GatewayProcess> {
    const env = await testEnvironment();
    const [grpcPort, httpPort] = [await freePort(), await freePort()];
    const document = testConfigDocument(env, options);
    document.listen = { grpc: `127.0.0.1:${grpcPort}`, http: `127.0.0.1:${httpPort}` };
    // Only the embedded default's keys: the tests' extra keys change as the tests grow.
    document.keys = BENCH_KEYS.map((name) => ({ name, label: name }));
    document.authorization = { rules: [{ identity: IDENTITIES.dev, keys: BENCH_KEYS, ...(options.ticketKeyScopes ? { ticketKeyScopes: options.ticketKeyScopes } : {}) }] };
    fs.mkdirSync(workDir, { recursive: true });
    const configFile = path.join(workDir, 'gateway.yaml');
    // JSON is YAML: the config loader reads it as is.
    fs.writeFileSync(configFile, JSON.stringify(document, null, 2), { mode: 0o600 });
    // stdout carries the JSON logs and one audit line per signature (as in production, to a sink
    // that costs a write): /dev/null. stderr (start-up failures) goes to the log file.
    const out = fs.openSync('/dev/null', 'w');
    const err = fs.openSync(options.logFile, 'a');
    const childEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('HSMGW_')));
    const child = spawn(process.execPath, [...(options.execArgv ?? []), path.join(REPO_ROOT, 'bin', 'hsm-gateway.js'), 'serve', '--config', configFile], {
      cwd: workDir, stdio: ['ignore', out, err], env: childEnv,
    });
    fs.closeSync(out);
    fs.closeSync(err);
    const gw = new GatewayProcess(env, child, `localhost:${grpcPort}`, `http://127.0.0.1:${httpPort}/metrics`, configFile);
    await gw.waitReady(`http://127.0.0.1:${httpPort}/readyz`, options.logFile);
    return gw;
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  private async waitReady(url: string, logFile: string): Promise<void> {
    const until = Date.now() + 30_000;
    while (Date.now() < until) {
      if (this.child.exitCode !== null) break;
      try {
        const res = await fetch(url);
        if (res.status === 200) return;
      } catch {
        // not listening yet
      }
      await sleep(50);
    }
    const tail = fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8').slice(-2000) : '';
    this.child.kill('SIGKILL');
    throw new Error(`gateway did not become ready (exit code ${this.child.exitCode}); log tail:\n${tail}`);
  }

  async metricsText(): Promise<string> {
    return (await fetch(this.metricsUrl)).text();
  }

  async counters(): Promise<ServerCounters> {
    // /proc first: the scrape below costs the gateway some CPU of its own.
    const cpuMicros = processCpuMicros(this.pid);
    const mainThreadCpuMicros = threadCpuMicros(this.pid).get(this.pid) ?? NaN;
    const text = await this.metricsText();
    const value = (name: string): number => Number(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
    return {
      cpuMicros,
      mainThreadCpuMicros,
      hsmSeconds: value('hsmgw_hsm_operation_seconds_sum'),
      hsmCount: value('hsmgw_hsm_operation_seconds_count'),
    };
  }

  memory(): { rss: number; peakRss: number } {
    return memory(this.pid);
  }

  /** SIGTERM (graceful: with --cpu-prof the profile is written on exit), SIGKILL after 15 s. */
  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 15_000);
    await exited;
    clearTimeout(timer);
  }
}
