/**
 * Section 3, nginx: what a C proxy pays per full handshake for its key. Debian's nginx (the same
 * 2 workers in every cell) with
 * - a PEM key file (the baseline),
 * - a keyless key: the standalone provider (hsmgw-provider.so) asking `hsm-gateway agent` over a
 *   Unix socket, the agent asking the real gateway,
 * - libp11's engine (Debian's libengine-pkcs11-openssl) signing straight into SoftHSM2 on the
 *   same token, inside the nginx workers.
 * Load: `openssl s_time -new` processes (a full TLS 1.3 handshake per connection). Handshakes are
 * counted by nginx itself (stub_status accepts); CPU comes from /proc for nginx's master and
 * workers, and separately for the agent, the gateway and the load. Cells are interleaved, every
 * cell once per round; tables show medians with min-max over rounds.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { GatewayProcess } from '../support/gateway-process';
import { startSTimeLoad, stopSTimeLoad } from '../support/s-time-load';
import { CpuWindow, voluntaryContextSwitches } from '../support/proc-stats';
import { spread, type Spread } from '../support/stats';
import { fmt, fmtSpread, markdownTable } from '../support/table';
import type { Target } from '../support/targets';
import { SIGN_KEYS, type KeyKind } from '../sign/sign-specs';
import { makePemKeys } from '../handshake/handshake-bench';
import { PROVIDER_MODULE } from '../../client/agent/provider-config';
import { freePort } from '../../test/support/free-port';
import {
  keylessPem, run, startAgent, startNginx, writeOpensslConf, type AgentProcess, type KeylessFiles, type NginxSite, type ServerProcess,
} from '../../test/proxies/support/proxy-kit';

export type NginxVariant = 'pem' | 'keyless' | 'libp11';
const VARIANTS: NginxVariant[] = ['pem', 'keyless', 'libp11'];
const KEYS: KeyKind[] = ['ecdsa-p256', 'rsa-2048'];
const LOAD_PROCESSES = 16;
const LIBP11_ENGINE = '/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so';

export interface NginxSample {
  handshakesPerSec: number;
  /** nginx master + workers, µs per handshake. */
  nginxCpuMicros: number;
  /** Times an nginx worker went to sleep, per handshake (a blocking wait for the agent is one). */
  nginxSleepsPerHandshake: number;
  agentCpuMicros: number;
  gatewayCpuMicros: number;
  loadCpuMicros: number;
  /** Load processes that died (a failed handshake ends s_time) and new [crit]/[error] lines in nginx's log. */
  failures: number;
}
type Metric = Exclude<keyof NginxSample, 'failures'>;
const METRICS: Metric[] = ['handshakesPerSec', 'nginxCpuMicros', 'nginxSleepsPerHandshake', 'agentCpuMicros', 'gatewayCpuMicros', 'loadCpuMicros'];

export interface NginxCell {
  key: KeyKind;
  variant: NginxVariant;
  samples: NginxSample[];
  summary: Record<Metric, Spread>;
  failures: number;
}

export interface NginxBenchResult {
  skipped?: string;
  workers: number;
  loadProcesses: number;
  rounds: number;
  windowMs: number;
  cells: NginxCell[];
}

export interface NginxBenchOptions {
  gateway: GatewayProcess;
  workDir: string;
  quick: boolean;
  log(line: string): void;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Why this section cannot run here, or undefined. */
async function missingParts(): Promise<string | undefined> {
  if (!fs.existsSync(PROVIDER_MODULE)) return 'the standalone provider is not built (npm run build:provider)';
  if (!fs.existsSync(LIBP11_ENGINE)) return `libp11's engine is missing (${LIBP11_ENGINE}: apt-get install libengine-pkcs11-openssl)`;
  if ((await run('nginx', ['-v'])).code !== 0) return 'nginx is not installed (apt-get install nginx)';
  return undefined;
}

/** openssl.cnf loading libp11's engine on the token; the PIN sits in this 0600 scratch file only. */
function writeEngineConf(dir: string, gateway: GatewayProcess): string {
  const file = path.join(dir, 'openssl-libp11.cnf');
  fs.writeFileSync(file, [
    'openssl_conf = openssl_init', '[openssl_init]', 'engines = engine_section', '[engine_section]', 'pkcs11 = pkcs11_section',
    '[pkcs11_section]', 'engine_id = pkcs11', `dynamic_path = ${LIBP11_ENGINE}`, `MODULE_PATH = ${gateway.env.modulePath}`,
    `PIN = ${fs.readFileSync(gateway.env.pinFile, 'utf8').trim()}`, 'init = 1', '',
  ].join('\n'), { mode: 0o600 });
  return file;
}

function writePlainConf(dir: string): string {
  const file = path.join(dir, 'openssl-plain.cnf');
  fs.writeFileSync(file, ['openssl_conf = openssl_init', '[openssl_init]', 'providers = provider_sect', '[provider_sect]', 'default = default_sect', '[default_sect]', 'activate = 1', ''].join('\n'));
  return file;
}

interface RunningNginx {
  server: ServerProcess & { prefix: string };
  statusPort: number;
  ports: Record<KeyKind, number>;
}

async function startVariant(dir: string, opensslConf: string, keyFiles: Record<KeyKind, KeylessFiles>): Promise<RunningNginx> {
  fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
  const ports = {} as Record<KeyKind, number>;
  const sites: NginxSite[] = [];
  for (const key of KEYS) {
    ports[key] = await freePort();
    sites.push({ port: ports[key], serverName: 'localhost', files: keyFiles[key] });
  }
  const statusPort = await freePort();
  // libp11 re-opens the token in each worker after fork: the workers need SoftHSM's config and
  // the token's files, so every variant runs its workers as the same user for a fair comparison.
  const mainDirectives = ['env SOFTHSM2_CONF;', ...(process.getuid?.() === 0 ? ['user root root;'] : [])];
  const server = await startNginx(dir, opensslConf, sites, { mainDirectives, statusPort });
  return { server, statusPort, ports };
}

async function acceptedConnections(statusPort: number): Promise<number> {
  const response = await fetch(`http://127.0.0.1:${statusPort}/status`);
  const text = await response.text();
  // "server accepts handled requests\n A H R": the status request itself is one more accept.
  const match = /\n\s*(\d+)\s+\d+\s+\d+/.exec(text);
  if (!match) throw new Error(`unexpected stub_status output: ${text}`);
  return Number(match[1]);
}

function errorLines(prefix: string): number {
  const log = path.join(prefix, 'logs', 'error.log');
  if (!fs.existsSync(log)) return 0;
  return fs.readFileSync(log, 'utf8').split('\n').filter((l) => /\[(crit|error|alert|emerg)\]/.test(l)).length;
}

async function measure(nginx: RunningNginx, key: KeyKind, agent: AgentProcess, gateway: GatewayProcess, warmupMs: number, windowMs: number): Promise<NginxSample> {
  const load = startSTimeLoad(nginx.ports[key], LOAD_PROCESSES);
  try {
    await sleep(warmupMs);
    const errors0 = errorLines(nginx.server.prefix);
    const accepted0 = await acceptedConnections(nginx.statusPort);
    const pids = await nginx.server.pids();
    const sleeps = (): number => pids.reduce((n, pid) => n + voluntaryContextSwitches(pid), 0);
    const sleeps0 = sleeps();
    const nginxCpu = new CpuWindow(pids);
    const agentCpu = new CpuWindow([agent.child.pid ?? -1]);
    const gatewayCpu = new CpuWindow([gateway.pid]);
    const loadCpu = new CpuWindow(load.map((p) => p.pid ?? -1));
    const t0 = performance.now();
    await sleep(windowMs);
    const nginxMicros = nginxCpu.elapsedMicros();
    const nginxSleeps = sleeps() - sleeps0;
    const agentMicros = agentCpu.elapsedMicros();
    const gatewayMicros = gatewayCpu.elapsedMicros();
    const loadMicros = loadCpu.elapsedMicros();
    const handshakes = (await acceptedConnections(nginx.statusPort)) - accepted0 - 1;
    const seconds = (performance.now() - t0) / 1000;
    const per = (micros: number): number => (handshakes > 0 ? micros / handshakes : NaN);
    const deadLoad = load.filter((p) => p.exitCode !== null || p.signalCode !== null).length;
    return {
      handshakesPerSec: handshakes / seconds, nginxCpuMicros: per(nginxMicros), nginxSleepsPerHandshake: per(nginxSleeps), agentCpuMicros: per(agentMicros),
      gatewayCpuMicros: per(gatewayMicros), loadCpuMicros: per(loadMicros), failures: deadLoad + errorLines(nginx.server.prefix) - errors0,
    };
  } finally {
    await stopSTimeLoad(load);
  }
}

export async function runNginxBench(o: NginxBenchOptions): Promise<NginxBenchResult> {
  const rounds = o.quick ? 1 : 3;
  const warmupMs = o.quick ? 300 : 800;
  const windowMs = o.quick ? 800 : 2500;
  const result: NginxBenchResult = { workers: 2, loadProcesses: LOAD_PROCESSES, rounds, windowMs, cells: [] };
  const missing = await missingParts();
  if (missing) {
    o.log(`bench: nginx section skipped: ${missing}`);
    return { ...result, skipped: missing };
  }
  const dir = path.join(o.workDir, 'nginx-bench');
  fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
  fs.chmodSync(o.workDir, 0o755);
  const pems = makePemKeys(path.join(dir, 'pem'));
  const hsmFiles = {} as Record<KeyKind, KeylessFiles>;
  for (const key of KEYS) hsmFiles[key] = await keylessPem(o.gateway, SIGN_KEYS[key].keyName, dir);
  const pemFiles = {} as Record<KeyKind, KeylessFiles>;
  const libp11Files = {} as Record<KeyKind, KeylessFiles>;
  for (const key of KEYS) {
    pemFiles[key] = { key: pems[key].keyFile, crt: pems[key].certFile, pem: '' };
    // libp11 takes an engine key reference where nginx expects a file; the certificate is the HSM key's.
    const uri = `pkcs11:token=${o.gateway.env.tokenLabel};object=${SIGN_KEYS[key].keyName};type=private`;
    libp11Files[key] = { key: `"engine:pkcs11:${uri}"`, crt: hsmFiles[key].crt, pem: '' };
  }

  const agent = await startAgent(dir, [o.gateway.endpoint], o.gateway, { metricsPort: await freePort() });
  const servers = new Map<NginxVariant, RunningNginx>();
  try {
    servers.set('pem', await startVariant(path.join(dir, 'pem-nginx'), writePlainConf(dir), pemFiles));
    servers.set('keyless', await startVariant(path.join(dir, 'keyless-nginx'), writeOpensslConf(dir, agent.socket), hsmFiles));
    servers.set('libp11', await startVariant(path.join(dir, 'libp11-nginx'), writeEngineConf(dir, o.gateway), libp11Files));

    const plans = KEYS.flatMap((key) => VARIANTS.map((variant) => ({ key, variant })));
    const samples = plans.map((): NginxSample[] => []);
    for (let round = 0; round < rounds; round++) {
      for (let k = 0; k < plans.length; k++) {
        const i = (k + round * 2) % plans.length;
        const { key, variant } = plans[i];
        const sample = await measure(servers.get(variant) as RunningNginx, key, agent, o.gateway, warmupMs, windowMs);
        samples[i].push(sample);
        o.log(`bench: nginx ${key} ${variant}: ${sample.handshakesPerSec.toFixed(0)} handshakes/s, nginx ${sample.nginxCpuMicros.toFixed(0)} µs/handshake, agent ${sample.agentCpuMicros.toFixed(0)} µs${sample.failures ? `, ${sample.failures} failures` : ''}`);
      }
    }
    result.cells = plans.map((plan, i) => ({
      ...plan, samples: samples[i], failures: samples[i].reduce((n, s) => n + s.failures, 0),
      summary: Object.fromEntries(METRICS.map((m) => [m, spread(samples[i].map((s) => s[m]))])) as Record<Metric, Spread>,
    }));
    return result;
  } finally {
    await Promise.all([...servers.values()].map((s) => s.server.stop()));
    await agent.stop();
  }
}

const LABELS: Record<NginxVariant, string> = { pem: 'PEM key file', keyless: 'keyless (provider + agent + gateway)', libp11: 'libp11 engine → SoftHSM2' };

function cell(r: NginxBenchResult, key: KeyKind, variant: NginxVariant): NginxCell | undefined {
  return r.cells.find((c) => c.key === key && c.variant === variant);
}

export function nginxReport(r: NginxBenchResult): { text: string; targets: Target[] } {
  if (r.skipped) return { text: `skipped: ${r.skipped}`, targets: [] };
  const lines: string[] = [];
  lines.push(markdownTable(
    ['key', 'nginx key', 'handshakes/s', 'nginx CPU µs/handshake', 'nginx sleeps/handshake', 'agent CPU µs', 'gateway CPU µs', 's_time CPU µs', 'failures'],
    r.cells.map((c) => [
      c.key, LABELS[c.variant], fmtSpread(c.summary.handshakesPerSec), fmtSpread(c.summary.nginxCpuMicros), fmtSpread(c.summary.nginxSleepsPerHandshake, 2),
      c.variant === 'keyless' ? fmtSpread(c.summary.agentCpuMicros) : '-', c.variant === 'keyless' ? fmtSpread(c.summary.gatewayCpuMicros) : '-',
      fmtSpread(c.summary.loadCpuMicros), String(c.failures),
    ]),
  ));
  lines.push('');
  lines.push(`- nginx ${r.workers} workers in every cell; load ${r.loadProcesses} x openssl s_time -new (full TLS 1.3 handshakes); ${r.rounds} rounds of ${r.windowMs} ms per cell, interleaved; handshakes counted by nginx's stub_status`);
  lines.push('- nginx workers are synchronous: with a keyless key each worker waits one round trip to the agent and the gateway per full handshake (the rate column shows what that costs on loopback)');

  const targets: Target[] = [];
  const goals: Record<KeyKind, number> = { 'rsa-2048': 0.7, 'ecdsa-p256': 1.1 };
  const cpu = (key: KeyKind, variant: NginxVariant): number => cell(r, key, variant)?.summary.nginxCpuMicros.median ?? NaN;
  for (const key of KEYS) {
    const ratio = cpu(key, 'keyless') / cpu(key, 'pem');
    targets.push({
      name: `nginx CPU per full handshake, keyless / PEM ≤ ${goals[key]}x (${key})`,
      met: Number.isFinite(ratio) ? ratio <= goals[key] : undefined,
      value: `${fmt(ratio, 2)}x (${fmt(cpu(key, 'keyless'))} vs ${fmt(cpu(key, 'pem'))} µs)`,
    });
  }
  for (const key of KEYS) {
    const ratio = cpu(key, 'keyless') / cpu(key, 'libp11');
    targets.push({
      name: `nginx CPU per full handshake, keyless ≤ libp11 → SoftHSM2 (${key})`,
      met: Number.isFinite(ratio) ? ratio <= 1 : undefined,
      value: `${fmt(ratio, 2)}x (${fmt(cpu(key, 'keyless'))} vs ${fmt(cpu(key, 'libp11'))} µs; agent adds ${fmt(cell(r, key, 'keyless')?.summary.agentCpuMicros.median)} µs)`,
    });
  }
  return { text: lines.join('\n'), targets };
}
