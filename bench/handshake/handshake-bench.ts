/**
 * Section 2, the handshake path: full TLS 1.3 handshakes (no resumption) against a Node HTTPS
 * server with its key in a PEM file ("stock") or keyless through the gateway, in one process and
 * in a 2-worker node:cluster, for ECDSA P-256 and RSA-2048. The load is `openssl s_time -new
 * -www /` processes (C, cheap per handshake); the server counts completed handshakes, and the CPU
 * of every process (server, its workers, the load, the gateway) comes from /proc.
 */
import { execFileSync, fork, spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { GatewayProcess } from '../support/gateway-process';
import { freePort } from '../support/gateway-process';
import { CpuWindow } from '../support/proc-stats';
import { spread, type Spread } from '../support/stats';
import { fmt, fmtSpread, markdownTable } from '../support/table';
import type { Target } from '../support/targets';
import { SIGN_KEYS, type KeyKind } from '../sign/sign-specs';
import type { FromServer, HttpsServerSpec, ToServer } from './handshake-specs';

export interface HandshakeSample {
  handshakes: number;
  handshakesPerSec: number;
  clientErrors: number;
  firstError?: string;
  /** CPU of the HTTPS server (all its processes: primary and workers) per handshake, µs. */
  serverCpuMicrosPerHandshake: number;
  /** CPU of the openssl s_time processes per handshake, µs. */
  loadCpuMicrosPerHandshake: number;
  /** CPU of the gateway per handshake, µs (keyless only; idle otherwise). */
  gatewayCpuMicrosPerHandshake: number;
}

export interface HandshakeCell {
  key: KeyKind;
  mode: 'pem' | 'keyless';
  workers: number;
  samples: HandshakeSample[];
  summary: Record<'handshakesPerSec' | 'serverCpuMicrosPerHandshake' | 'loadCpuMicrosPerHandshake' | 'gatewayCpuMicrosPerHandshake', Spread>;
}

export interface HandshakeComparison {
  key: KeyKind;
  workers: number;
  /** keyless / stock, medians. */
  rateRatio: number;
  serverCpuRatio: number;
  /** Keyless server CPU minus stock server CPU per handshake, µs: the proxy's cost of a remote signature minus that of a local one. */
  serverCpuDeltaMicros: number;
  gatewayCpuMicrosPerHandshake: number;
}

export interface HandshakeBenchResult {
  loadGenerator: string;
  loadProcesses: number;
  rounds: number;
  windowMs: number;
  cells: HandshakeCell[];
  comparisons: HandshakeComparison[];
  /** Why keyless was not measured, when it was not. */
  keylessPending?: string;
  nginx?: { pending: string };
}

export interface HandshakeBenchOptions {
  gateway: GatewayProcess;
  workDir: string;
  quick: boolean;
  withStock: boolean;
  withNginx: boolean;
  log(line: string): void;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function makePemKeys(dir: string): Record<KeyKind, { keyFile: string; certFile: string }> {
  fs.mkdirSync(dir, { recursive: true });
  const out = {} as Record<KeyKind, { keyFile: string; certFile: string }>;
  const specs: Record<KeyKind, string[]> = { 'ecdsa-p256': ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'], 'rsa-2048': ['-newkey', 'rsa:2048'] };
  for (const key of Object.keys(specs) as KeyKind[]) {
    const keyFile = path.join(dir, `${key}.key`);
    const certFile = path.join(dir, `${key}.pem`);
    execFileSync('openssl', ['req', '-x509', ...specs[key], '-nodes', '-keyout', keyFile, '-out', certFile, '-days', '30', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1'], { stdio: 'ignore' });
    out[key] = { keyFile, certFile };
  }
  return out;
}

class HttpsServerProcess {
  private constructor(private readonly child: ChildProcess, readonly pids: number[], readonly port: number) {}

  static async start(script: string, spec: HttpsServerSpec): Promise<HttpsServerProcess> {
    const child = fork(script, [], { env: { ...process.env, BENCH_HTTPS_SERVER_SPEC: JSON.stringify(spec) }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const pids = await new Promise<number[]>((resolve, reject) => {
      child.once('message', (m: FromServer) => (m.type === 'listening' ? resolve(m.pids) : reject(new Error(m.type === 'failed' ? m.message : 'server failed'))));
      child.once('exit', (code) => reject(new Error(`https server exited (${code})`)));
    });
    return new HttpsServerProcess(child, pids, spec.port);
  }

  counts(): Promise<Extract<FromServer, { type: 'counts' }>> {
    return new Promise((resolve) => {
      this.child.once('message', (m: FromServer) => resolve(m as Extract<FromServer, { type: 'counts' }>));
      this.child.send({ type: 'counts' } satisfies ToServer);
    });
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || !this.child.connected) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.disconnect();
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  }
}

/** `openssl s_time -new` processes hammering one port until stopped. */
function startLoad(port: number, count: number): ChildProcess[] {
  return Array.from({ length: count }, () => spawn('openssl', ['s_time', '-connect', `127.0.0.1:${port}`, '-new', '-www', '/', '-time', '3600'], { stdio: 'ignore' }));
}

async function stopLoad(load: ChildProcess[]): Promise<void> {
  await Promise.all(load.map((p) => new Promise<void>((resolve) => {
    if (p.exitCode !== null || p.signalCode !== null) return resolve();
    p.once('exit', () => resolve());
    p.kill('SIGTERM');
  })));
}

async function measure(server: HttpsServerProcess, gateway: GatewayProcess, loadProcesses: number, warmupMs: number, windowMs: number): Promise<HandshakeSample> {
  const load = startLoad(server.port, loadProcesses);
  try {
    await sleep(warmupMs);
    const loadPids = load.map((p) => p.pid ?? -1);
    const c0 = await server.counts();
    const serverCpu = new CpuWindow(server.pids);
    const loadCpu = new CpuWindow(loadPids);
    const gatewayCpu = new CpuWindow([gateway.pid]);
    const t0 = performance.now();
    await sleep(windowMs);
    const c1 = await server.counts();
    const seconds = (performance.now() - t0) / 1000;
    const n = c1.handshakes - c0.handshakes;
    const per = (micros: number): number => (n > 0 ? micros / n : NaN);
    return {
      handshakes: n, handshakesPerSec: n / seconds, clientErrors: c1.clientErrors - c0.clientErrors, firstError: c1.firstError,
      serverCpuMicrosPerHandshake: per(serverCpu.elapsedMicros()), loadCpuMicrosPerHandshake: per(loadCpu.elapsedMicros()),
      gatewayCpuMicrosPerHandshake: per(gatewayCpu.elapsedMicros()),
    };
  } finally {
    await stopLoad(load);
  }
}

export async function runHandshakeBench(o: HandshakeBenchOptions): Promise<HandshakeBenchResult> {
  const rounds = o.quick ? 1 : 3;
  const warmupMs = o.quick ? 300 : 700;
  const windowMs = o.quick ? 700 : 2500;
  const loadProcesses = 4;
  const result: HandshakeBenchResult = {
    loadGenerator: 'openssl s_time -new -www / (OpenSSL CLI, full TLS 1.3 handshake per connection, no resumption)',
    loadProcesses, rounds, windowMs, cells: [], comparisons: [],
  };
  if (o.withNginx) result.nginx = { pending: 'not run: nginx with libengine-pkcs11-openssl is optional (issue section 3) and was left out of this suite; FIELD-NOTES records nginx server CPU per handshake on this machine kind' };
  if (!o.withStock) return result;

  const pems = makePemKeys(path.join(o.workDir, 'pem'));
  const script = path.join(__dirname, 'https-server.js');
  const env = o.gateway.env;
  const keys: KeyKind[] = ['ecdsa-p256', 'rsa-2048'];
  const plans: Array<{ key: KeyKind; mode: 'pem' | 'keyless'; workers: number }> = [];
  for (const key of keys) for (const workers of [0, 2]) for (const mode of ['pem', 'keyless'] as const) plans.push({ key, mode, workers });

  const servers = new Map<number, HttpsServerProcess>();
  try {
    for (let i = 0; i < plans.length; i++) {
      const p = plans[i];
      const spec: HttpsServerSpec = {
        ...p, port: await freePort(),
        pem: pems[p.key],
        keyless: { keyName: SIGN_KEYS[p.key].keyName, endpoint: o.gateway.endpoint, caFile: env.pki.ca, certFile: env.pki.clients.dev.cert, keyFile: env.pki.clients.dev.key },
      };
      try {
        servers.set(i, await HttpsServerProcess.start(script, spec));
      } catch (err) {
        if (p.mode !== 'keyless') throw err;
        result.keylessPending = `keyless server did not start: ${(err as Error).message.split('\n')[0]}`;
        o.log(`  ${result.keylessPending}`);
      }
    }
    const samples = plans.map((): HandshakeSample[] => []);
    for (let round = 0; round < rounds; round++) {
      for (let k = 0; k < plans.length; k++) {
        const i = (k + round * 3) % plans.length;
        const server = servers.get(i);
        if (!server) continue;
        const s = await measure(server, o.gateway, loadProcesses, warmupMs, windowMs);
        samples[i].push(s);
        const p = plans[i];
        o.log(`  round ${round + 1}/${rounds} ${p.key} ${p.mode} ${p.workers ? `cluster x${p.workers}` : 'single'}: ${Math.round(s.handshakesPerSec)} handshakes/s, server ${fmt(s.serverCpuMicrosPerHandshake)} µs CPU/handshake${s.clientErrors ? ` (${s.clientErrors} TLS client errors: ${s.firstError})` : ''}`);
      }
    }
    result.cells = plans.map((p, i) => {
      const of = (f: (s: HandshakeSample) => number): Spread => spread(samples[i].map(f));
      return {
        ...p, samples: samples[i],
        summary: {
          handshakesPerSec: of((s) => s.handshakesPerSec), serverCpuMicrosPerHandshake: of((s) => s.serverCpuMicrosPerHandshake),
          loadCpuMicrosPerHandshake: of((s) => s.loadCpuMicrosPerHandshake), gatewayCpuMicrosPerHandshake: of((s) => s.gatewayCpuMicrosPerHandshake),
        },
      };
    }).filter((c) => c.samples.length > 0);
    for (const key of keys) {
      for (const workers of [0, 2]) {
        const stock = result.cells.find((c) => c.key === key && c.workers === workers && c.mode === 'pem');
        const keyless = result.cells.find((c) => c.key === key && c.workers === workers && c.mode === 'keyless');
        if (!stock || !keyless) continue;
        result.comparisons.push({
          key, workers,
          rateRatio: keyless.summary.handshakesPerSec.median / stock.summary.handshakesPerSec.median,
          serverCpuRatio: keyless.summary.serverCpuMicrosPerHandshake.median / stock.summary.serverCpuMicrosPerHandshake.median,
          serverCpuDeltaMicros: keyless.summary.serverCpuMicrosPerHandshake.median - stock.summary.serverCpuMicrosPerHandshake.median,
          gatewayCpuMicrosPerHandshake: keyless.summary.gatewayCpuMicrosPerHandshake.median,
        });
      }
    }
    return result;
  } finally {
    await Promise.all([...servers.values()].map((s) => s.stop()));
  }
}

export function handshakeReport(r: HandshakeBenchResult, localRsaSignCpuMicros?: number): { text: string; targets: Target[] } {
  const lines: string[] = [];
  if (r.cells.length) {
    lines.push(markdownTable(
      ['key', 'server', 'processes', 'handshakes/s', 'server CPU µs/handshake', 's_time CPU µs/handshake', 'gateway CPU µs/handshake'],
      r.cells.map((c) => [
        c.key, c.mode === 'pem' ? 'stock (PEM key)' : 'keyless', c.workers ? `cluster x${c.workers}` : 'single',
        fmtSpread(c.summary.handshakesPerSec), fmtSpread(c.summary.serverCpuMicrosPerHandshake), fmtSpread(c.summary.loadCpuMicrosPerHandshake),
        c.mode === 'keyless' ? fmtSpread(c.summary.gatewayCpuMicrosPerHandshake) : '-',
      ]),
    ));
    lines.push('');
    lines.push(markdownTable(
      ['key', 'processes', 'rate keyless/stock', 'server CPU/handshake keyless/stock', 'server CPU delta µs', 'gateway CPU µs/handshake'],
      r.comparisons.map((c) => [c.key, c.workers ? `cluster x${c.workers}` : 'single', fmt(c.rateRatio, 2), fmt(c.serverCpuRatio, 2), fmt(c.serverCpuDeltaMicros), fmt(c.gatewayCpuMicrosPerHandshake)]),
    ));
    lines.push('');
    lines.push(`- load: ${r.loadProcesses} x ${r.loadGenerator}; ${r.rounds} rounds of ${r.windowMs} ms per cell, interleaved`);
  }
  if (r.keylessPending) lines.push(`- keyless: PENDING (${r.keylessPending})`);
  if (r.nginx) lines.push(`- nginx reference: ${r.nginx.pending}`);
  const targets: Target[] = [];
  const goal = (key: KeyKind, workers: number): number => (workers ? 0.9 : key === 'ecdsa-p256' ? 0.6 : 0.8);
  for (const key of ['ecdsa-p256', 'rsa-2048'] as KeyKind[]) {
    for (const workers of [0, 2]) {
      const c = r.comparisons.find((x) => x.key === key && x.workers === workers);
      const name = `keyless handshake rate ≥ ${goal(key, workers)}x stock, ${workers ? `cluster x${workers}` : 'single process'} (${key})`;
      targets.push(c ? { name, met: c.rateRatio >= goal(key, workers), value: `${c.rateRatio.toFixed(2)}x (server CPU/handshake ${c.serverCpuRatio.toFixed(2)}x, gateway ${fmt(c.gatewayCpuMicrosPerHandshake)} µs/handshake)` } : { name, met: undefined, value: r.keylessPending ?? 'not measured' });
    }
  }
  const rsa = r.comparisons.find((x) => x.key === 'rsa-2048' && x.workers === 0);
  if (rsa) {
    targets.push({
      name: 'proxy CPU per RSA-2048 handshake lower keyless than with the local key (remote signature cheaper than local signing)',
      met: rsa.serverCpuDeltaMicros < 0,
      value: `keyless - stock = ${fmt(rsa.serverCpuDeltaMicros)} µs per handshake, i.e. a remote signature costs the proxy ${fmt((localRsaSignCpuMicros ?? NaN) + rsa.serverCpuDeltaMicros)} µs vs ${fmt(localRsaSignCpuMicros)} µs for a local one`,
    });
  }
  return { text: lines.join('\n'), targets };
}
