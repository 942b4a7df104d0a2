/**
 * Section 2, the handshake path: what a proxy operator pays. A stock Node `tls.createServer`
 * (one process) terminates full TLS 1.3 handshakes (no resumption) with its key in a PEM file
 * (the baseline) or keyless through the real gateway, in the default mode and in each explicit
 * mode. Between the keyless proxies and the gateway sits a TCP forwarder that adds 0, 1 or 5 ms
 * of round trip. The load is `openssl s_time -new` processes (C, cheap per handshake).
 *
 * Saturation cells (16 s_time clients, as fast as the proxy goes): handshakes/s, the proxy's CPU
 * per handshake (all its threads, from /proc, and its main thread alone) and the gateway's.
 * Paced cells (the same fixed rate offered to every server, below saturation): the proxy's
 * event-loop delay, which then measures blocking rather than queueing. Cells are interleaved
 * (every cell once per round); tables show medians with min-max over rounds. Then an RSS soak:
 * the default-mode keyless proxy over many handshakes, first quarter against last.
 */
import { execFileSync, fork, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { GatewayProcess } from '../support/gateway-process';
import { startSTimeLoad, stopSTimeLoad } from '../support/s-time-load';
import { CpuWindow, threadCpuMicros } from '../support/proc-stats';
import { spread, type Spread } from '../support/stats';
import { fmt, fmtSpread, markdownTable } from '../support/table';
import type { Target } from '../support/targets';
import { SIGN_KEYS, type KeyKind } from '../sign/sign-specs';
import type { FromProxy, ProxyServerKind, ProxySpec, ProxyWindow, ToProxy } from './handshake-specs';
import { LatencyForwarder } from '../../test/support/latency-forwarder';

export interface HandshakeCellSpec {
  key: KeyKind;
  server: ProxyServerKind;
  /** Round trip added between the proxy and the gateway, ms (0 for the PEM baseline). */
  rttMs: number;
}

export interface HandshakeSample {
  handshakesPerSec: number;
  clientErrors: number;
  firstError?: string;
  /** CPU of the proxy process (every thread) per handshake, µs. */
  proxyCpuMicros: number;
  /** CPU of the proxy's main (event-loop) thread per handshake, µs. */
  proxyMainThreadMicros: number;
  gatewayCpuMicros: number;
  loadCpuMicros: number;
  /** Mean delay the forwarder actually added to each chunk, ms. */
  addedDelayMs: number;
  /** Non-blocking: signatures per dispatch (per loop turn that sent any). */
  signaturesPerDispatch: number;
}

type Metric = 'handshakesPerSec' | 'proxyCpuMicros' | 'proxyMainThreadMicros' | 'gatewayCpuMicros' | 'loadCpuMicros' | 'addedDelayMs' | 'signaturesPerDispatch';
const METRICS: Metric[] = ['handshakesPerSec', 'proxyCpuMicros', 'proxyMainThreadMicros', 'gatewayCpuMicros', 'loadCpuMicros', 'addedDelayMs', 'signaturesPerDispatch'];

export interface HandshakeCell extends HandshakeCellSpec {
  /** The mode the proxy reported ('pem', 'non-blocking' or 'blocking'). */
  mode: string;
  samples: HandshakeSample[];
  summary: Record<Metric, Spread>;
}

export interface PacedSample {
  offeredPerSec: number;
  completedPerSec: number;
  errors: number;
  loopDelayP50Ms: number;
  loopDelayP99Ms: number;
  loopDelayMaxMs: number;
}

export interface PacedCell extends HandshakeCellSpec {
  samples: PacedSample[];
  summary: Record<'completedPerSec' | 'loopDelayP50Ms' | 'loopDelayP99Ms' | 'loopDelayMaxMs', Spread>;
}

export interface RssSoak {
  key: KeyKind;
  server: ProxyServerKind;
  /** Handshakes served before the first sample (not counted). */
  warmup: number;
  handshakes: number;
  points: Array<{ handshakes: number; rssBytes: number }>;
  firstQuarterMb: number;
  lastQuarterMb: number;
  /** (last - first) / first, percent. */
  growthPercent: number;
}

export interface HandshakeBenchResult {
  loadGenerator: string;
  loadProcesses: number;
  rounds: number;
  windowMs: number;
  cells: HandshakeCell[];
  /** Offered rate of the paced cells, handshakes/s. */
  pacedRate: number;
  paced: PacedCell[];
  rssSoak?: RssSoak;
}

export interface HandshakeBenchOptions {
  gateway: GatewayProcess;
  workDir: string;
  quick: boolean;
  log(line: string): void;
}

const KEYS: KeyKind[] = ['ecdsa-p256', 'rsa-2048'];
const KEYLESS_SERVERS: ProxyServerKind[] = ['auto', 'non-blocking', 'blocking'];
const RTTS_MS = [0, 1, 5];
const LOAD_PROCESSES = 16;
/** Below the saturation rate of every server in the paced cells but the blocking one at +5 ms. */
const PACED_RATE = 300;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export function serverLabel(server: ProxyServerKind): string {
  return server === 'pem' ? 'PEM key' : server === 'auto' ? 'keyless, default' : `keyless, ${server}`;
}

export function makePemKeys(dir: string): Record<KeyKind, { keyFile: string; certFile: string }> {
  fs.mkdirSync(dir, { recursive: true });
  const out = {} as Record<KeyKind, { keyFile: string; certFile: string }>;
  const specs: Record<KeyKind, string[]> = { 'ecdsa-p256': ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'], 'rsa-2048': ['-newkey', 'rsa:2048'] };
  for (const key of KEYS) {
    const keyFile = path.join(dir, `${key}.key`);
    const certFile = path.join(dir, `${key}.pem`);
    execFileSync('openssl', ['req', '-x509', ...specs[key], '-nodes', '-keyout', keyFile, '-out', certFile, '-days', '30', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1'], { stdio: 'ignore' });
    out[key] = { keyFile, certFile };
  }
  return out;
}

/** One proxy process and the orchestrator's messages to it. */
class ProxyProcess {
  private constructor(private readonly child: ChildProcess, readonly port: number, readonly mode: string) {}

  static async start(script: string, spec: ProxySpec): Promise<ProxyProcess> {
    const child = fork(script, [], { env: { ...process.env, BENCH_PROXY_SPEC: JSON.stringify(spec) }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const listening = await new Promise<Extract<FromProxy, { type: 'listening' }>>((resolve, reject) => {
      child.once('message', (m: FromProxy) => (m.type === 'listening' ? resolve(m) : reject(new Error(m.type === 'failed' ? m.message : 'proxy failed'))));
      child.once('exit', (code) => reject(new Error(`proxy exited (${code})`)));
    });
    return new ProxyProcess(child, listening.port, listening.mode);
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  private ask<T extends FromProxy['type']>(message: ToProxy, answer: T): Promise<Extract<FromProxy, { type: T }>> {
    return new Promise((resolve) => {
      const onMessage = (m: FromProxy): void => {
        if (m.type !== answer) return;
        this.child.off('message', onMessage);
        resolve(m as Extract<FromProxy, { type: T }>);
      };
      this.child.on('message', onMessage);
      this.child.send(message);
    });
  }

  windowStart(): void {
    this.child.send({ type: 'window-start' } satisfies ToProxy);
  }

  async windowEnd(): Promise<ProxyWindow> {
    return (await this.ask({ type: 'window-end' }, 'window')).window;
  }

  rss(): Promise<{ handshakes: number; rssBytes: number }> {
    return this.ask({ type: 'rss' }, 'rss');
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

function mainThreadMicros(pid: number): number {
  return threadCpuMicros(pid).get(pid) ?? NaN;
}

async function measure(proxy: ProxyProcess, gateway: GatewayProcess, forwarder: LatencyForwarder, warmupMs: number, windowMs: number): Promise<HandshakeSample> {
  const load = startSTimeLoad(proxy.port, LOAD_PROCESSES);
  try {
    await sleep(warmupMs);
    forwarder.resetObservedDelay();
    proxy.windowStart();
    const proxyCpu = new CpuWindow([proxy.pid]);
    const main0 = mainThreadMicros(proxy.pid);
    const loadCpu = new CpuWindow(load.map((p) => p.pid ?? -1));
    const gatewayCpu = new CpuWindow([gateway.pid]);
    const t0 = performance.now();
    await sleep(windowMs);
    const proxyMicros = proxyCpu.elapsedMicros();
    const mainMicros = mainThreadMicros(proxy.pid) - main0;
    const loadMicros = loadCpu.elapsedMicros();
    const gatewayMicros = gatewayCpu.elapsedMicros();
    const w = await proxy.windowEnd();
    const seconds = (performance.now() - t0) / 1000;
    const per = (micros: number): number => (w.handshakes > 0 ? micros / w.handshakes : NaN);
    return {
      handshakesPerSec: w.handshakes / seconds, clientErrors: w.clientErrors, firstError: w.firstError,
      proxyCpuMicros: per(proxyMicros), proxyMainThreadMicros: per(mainMicros), gatewayCpuMicros: per(gatewayMicros), loadCpuMicros: per(loadMicros),
      addedDelayMs: forwarder.observedDelayMs(),
      signaturesPerDispatch: w.dispatches > 0 ? w.asyncSignatures / w.dispatches : NaN,
    };
  } finally {
    await stopSTimeLoad(load);
  }
}

/** The proxy's event loop while PACED_RATE handshakes/s are offered (open loop). */
async function measurePaced(proxy: ProxyProcess, warmupMs: number, windowMs: number): Promise<PacedSample> {
  const load = fork(path.join(__dirname, 'paced-load.js'), [], { env: { ...process.env, BENCH_PACED_LOAD: JSON.stringify({ port: proxy.port, rate: PACED_RATE }) }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const counts = (): Promise<{ started: number; completed: number; errors: number }> => new Promise((resolve) => {
    load.once('message', resolve);
    load.send({});
  });
  try {
    await sleep(warmupMs);
    const c0 = await counts();
    proxy.windowStart();
    const t0 = performance.now();
    await sleep(windowMs);
    const w = await proxy.windowEnd();
    const c1 = await counts();
    const seconds = (performance.now() - t0) / 1000;
    return {
      offeredPerSec: (c1.started - c0.started) / seconds, completedPerSec: (c1.completed - c0.completed) / seconds, errors: c1.errors - c0.errors,
      loopDelayP50Ms: w.loopDelayP50Ms, loopDelayP99Ms: w.loopDelayP99Ms, loopDelayMaxMs: w.loopDelayMaxMs,
    };
  } finally {
    load.disconnect();
    await new Promise<void>((resolve) => (load.exitCode !== null ? resolve() : load.once('exit', () => resolve())));
  }
}

/**
 * The default-mode keyless proxy over `handshakes` full handshakes after `warmup` more (the heap,
 * the JIT and the allocator reach their steady state first), RSS sampled as it goes.
 */
async function rssSoak(proxy: ProxyProcess, key: KeyKind, warmup: number, handshakes: number, log: (line: string) => void): Promise<RssSoak> {
  const load = startSTimeLoad(proxy.port, LOAD_PROCESSES);
  const points: RssSoak['points'] = [];
  try {
    for (const begin = (await proxy.rss()).handshakes; (await proxy.rss()).handshakes - begin < warmup;) await sleep(500);
    const start = await proxy.rss();
    points.push({ handshakes: 0, rssBytes: start.rssBytes });
    for (let last = 0; last < handshakes;) {
      await sleep(500);
      const now = await proxy.rss();
      last = now.handshakes - start.handshakes;
      points.push({ handshakes: last, rssBytes: now.rssBytes });
      if (points.length % 20 === 0) log(`  rss soak: ${last} handshakes, RSS ${(now.rssBytes / 2 ** 20).toFixed(1)} MB`);
    }
  } finally {
    await stopSTimeLoad(load);
  }
  const total = points[points.length - 1]?.handshakes ?? 0;
  const meanMb = (from: number, to: number): number => {
    const inRange = points.filter((p) => p.handshakes >= from && p.handshakes <= to);
    return inRange.reduce((s, p) => s + p.rssBytes, 0) / Math.max(1, inRange.length) / 2 ** 20;
  };
  const firstQuarterMb = meanMb(0, total / 4);
  const lastQuarterMb = meanMb((total * 3) / 4, total);
  return { key, server: 'auto', warmup, handshakes: total, points, firstQuarterMb, lastQuarterMb, growthPercent: ((lastQuarterMb - firstQuarterMb) / firstQuarterMb) * 100 };
}

export async function runHandshakeBench(o: HandshakeBenchOptions): Promise<HandshakeBenchResult> {
  const rounds = o.quick ? 1 : 3;
  const warmupMs = o.quick ? 400 : 1000;
  const windowMs = o.quick ? 800 : 3000;
  const result: HandshakeBenchResult = {
    loadGenerator: 'openssl s_time -new (OpenSSL CLI: a full TLS 1.3 handshake per connection, no resumption)',
    loadProcesses: LOAD_PROCESSES, rounds, windowMs, cells: [], pacedRate: PACED_RATE, paced: [],
  };
  const pems = makePemKeys(path.join(o.workDir, 'pem'));
  const [host, port] = o.gateway.endpoint.split(':');
  const forwarder = await LatencyForwarder.start({ host: host ?? 'localhost', port: Number(port) });
  const env = o.gateway.env;
  const script = path.join(__dirname, 'proxy-server.js');
  const servers: ProxyServerKind[] = ['pem', ...KEYLESS_SERVERS];
  const proxies = new Map<string, ProxyProcess>();
  const proxyKey = (key: KeyKind, server: ProxyServerKind): string => `${key}/${server}`;
  try {
    for (const key of KEYS) {
      for (const server of servers) {
        const spec: ProxySpec = {
          key, server, pem: pems[key],
          keyless: { keyName: SIGN_KEYS[key].keyName, endpoint: `127.0.0.1:${forwarder.port}`, serverName: 'localhost', caFile: env.pki.ca, certFile: env.pki.clients.dev.cert, keyFile: env.pki.clients.dev.key },
        };
        proxies.set(proxyKey(key, server), await ProxyProcess.start(script, spec));
      }
    }
    const plans: HandshakeCellSpec[] = [];
    for (const key of KEYS) {
      plans.push({ key, server: 'pem', rttMs: 0 });
      for (const rttMs of RTTS_MS) for (const server of KEYLESS_SERVERS) plans.push({ key, server, rttMs });
    }
    const pacedPlans: HandshakeCellSpec[] = [];
    for (const key of KEYS) {
      pacedPlans.push({ key, server: 'pem', rttMs: 0 });
      for (const rttMs of RTTS_MS) pacedPlans.push({ key, server: 'auto', rttMs });
      pacedPlans.push({ key, server: 'blocking', rttMs: 5 });
    }
    const samples = plans.map((): HandshakeSample[] => []);
    const pacedSamples = pacedPlans.map((): PacedSample[] => []);
    for (let round = 0; round < rounds; round++) {
      for (let k = 0; k < plans.length; k++) {
        const i = (k + round * 5) % plans.length;
        const plan = plans[i];
        const proxy = proxies.get(proxyKey(plan.key, plan.server)) as ProxyProcess;
        forwarder.delayMs = plan.rttMs;
        const s = await measure(proxy, o.gateway, forwarder, warmupMs, windowMs);
        samples[i].push(s);
        o.log(`  round ${round + 1}/${rounds} ${plan.key} ${serverLabel(plan.server)} +${plan.rttMs} ms: ${Math.round(s.handshakesPerSec)} handshakes/s, proxy ${fmt(s.proxyCpuMicros)} µs CPU/handshake (main thread ${fmt(s.proxyMainThreadMicros)}), ${fmt(s.signaturesPerDispatch, 1)} signatures/dispatch${s.clientErrors ? ` (${s.clientErrors} TLS errors: ${s.firstError})` : ''}`);
      }
      for (let k = 0; k < pacedPlans.length; k++) {
        const i = (k + round * 3) % pacedPlans.length;
        const plan = pacedPlans[i];
        forwarder.delayMs = plan.rttMs;
        const s = await measurePaced(proxies.get(proxyKey(plan.key, plan.server)) as ProxyProcess, warmupMs, windowMs);
        pacedSamples[i].push(s);
        o.log(`  round ${round + 1}/${rounds} paced ${PACED_RATE}/s ${plan.key} ${serverLabel(plan.server)} +${plan.rttMs} ms: ${Math.round(s.completedPerSec)} completed/s, loop delay p50 ${fmt(s.loopDelayP50Ms, 1)} p99 ${fmt(s.loopDelayP99Ms, 1)} max ${fmt(s.loopDelayMaxMs, 1)} ms${s.errors ? ` (${s.errors} errors)` : ''}`);
      }
    }
    result.paced = pacedPlans.map((plan, i) => ({
      ...plan, samples: pacedSamples[i],
      summary: {
        completedPerSec: spread(pacedSamples[i].map((s) => s.completedPerSec)), loopDelayP50Ms: spread(pacedSamples[i].map((s) => s.loopDelayP50Ms)),
        loopDelayP99Ms: spread(pacedSamples[i].map((s) => s.loopDelayP99Ms)), loopDelayMaxMs: spread(pacedSamples[i].map((s) => s.loopDelayMaxMs)),
      },
    }));
    forwarder.delayMs = 0;
    result.cells = plans.map((plan, i) => ({
      ...plan,
      mode: proxies.get(proxyKey(plan.key, plan.server))?.mode ?? 'unknown',
      samples: samples[i],
      summary: Object.fromEntries(METRICS.map((m) => [m, spread(samples[i].map((s) => s[m]))])) as Record<Metric, Spread>,
    }));
    const soakHandshakes = o.quick ? 4000 : 100_000;
    const soakWarmup = o.quick ? 2000 : 10_000;
    o.log(`bench: RSS soak, ${soakHandshakes} handshakes after ${soakWarmup} more (ecdsa-p256, keyless, default mode)`);
    result.rssSoak = await rssSoak(proxies.get(proxyKey('ecdsa-p256', 'auto')) as ProxyProcess, 'ecdsa-p256', soakWarmup, soakHandshakes, o.log);
    return result;
  } finally {
    await Promise.all([...proxies.values()].map((p) => p.stop()));
    await forwarder.close();
  }
}

function cellOf(r: HandshakeBenchResult, key: KeyKind, server: ProxyServerKind, rttMs: number): HandshakeCell | undefined {
  return r.cells.find((c) => c.key === key && c.server === server && c.rttMs === rttMs);
}

export function handshakeReport(r: HandshakeBenchResult): { text: string; targets: Target[] } {
  const lines: string[] = [];
  lines.push(markdownTable(
    ['key', 'server', 'mode', '+RTT ms', 'handshakes/s', 'proxy CPU µs/handshake', 'main thread µs', 'signatures/dispatch', 'gateway CPU µs', 's_time CPU µs'],
    r.cells.map((c) => [
      c.key, serverLabel(c.server), c.mode, c.server === 'pem' ? '-' : `${c.rttMs} (${fmt(c.summary.addedDelayMs.median, 1)})`,
      fmtSpread(c.summary.handshakesPerSec), fmtSpread(c.summary.proxyCpuMicros), fmtSpread(c.summary.proxyMainThreadMicros),
      fmtSpread(c.summary.signaturesPerDispatch, 1), c.server === 'pem' ? '-' : fmtSpread(c.summary.gatewayCpuMicros), fmtSpread(c.summary.loadCpuMicros),
    ]),
  ));
  lines.push('');
  const comparisons: string[][] = [];
  for (const key of KEYS) {
    const pem = cellOf(r, key, 'pem', 0);
    for (const server of KEYLESS_SERVERS) {
      const at = (rtt: number): HandshakeCell | undefined => cellOf(r, key, server, rtt);
      const rate = (rtt: number): number => (at(rtt)?.summary.handshakesPerSec.median ?? NaN) / (at(0)?.summary.handshakesPerSec.median ?? NaN);
      const cpu = (at(0)?.summary.proxyCpuMicros.median ?? NaN) / (pem?.summary.proxyCpuMicros.median ?? NaN);
      comparisons.push([key, serverLabel(server), fmt(cpu, 2), fmt(rate(1), 2), fmt(rate(5), 2)]);
    }
  }
  lines.push(markdownTable(['key', 'server', 'proxy CPU/handshake vs PEM (+0 ms)', 'rate +1 ms / +0 ms', 'rate +5 ms / +0 ms'], comparisons));
  lines.push('');
  lines.push(`- saturation load: ${r.loadProcesses} x ${r.loadGenerator}; ${r.rounds} rounds of ${r.windowMs} ms per cell, interleaved; +RTT: round trip added by a TCP forwarder in front of the real gateway (measured mean in brackets)`);
  lines.push('');
  lines.push(`Event loop at a paced load of ${r.pacedRate} handshakes/s offered to each server (Node TLS clients started at a fixed rate, open loop):`);
  lines.push('');
  lines.push(markdownTable(
    ['key', 'server', '+RTT ms', 'completed/s', 'loop delay p50 ms', 'loop delay p99 ms', 'loop delay max ms'],
    r.paced.map((c) => [c.key, serverLabel(c.server), c.server === 'pem' ? '-' : String(c.rttMs), fmtSpread(c.summary.completedPerSec), fmtSpread(c.summary.loopDelayP50Ms, 1), fmtSpread(c.summary.loopDelayP99Ms, 1), fmtSpread(c.summary.loopDelayMaxMs, 1)]),
  ));
  const soak = r.rssSoak;
  if (soak) {
    lines.push(`- RSS soak (${soak.key}, ${serverLabel(soak.server)}): ${soak.handshakes} handshakes after ${soak.warmup} of warm-up, RSS first quarter ${soak.firstQuarterMb.toFixed(1)} MB, last quarter ${soak.lastQuarterMb.toFixed(1)} MB (${soak.growthPercent >= 0 ? '+' : ''}${soak.growthPercent.toFixed(1)} %)`);
  }

  const targets: Target[] = [];
  const goals: Record<KeyKind, number> = { 'rsa-2048': 0.7, 'ecdsa-p256': 1.05 };
  for (const key of KEYS) {
    const pem = cellOf(r, key, 'pem', 0);
    const keyless = cellOf(r, key, 'auto', 0);
    const ratio = (keyless?.summary.proxyCpuMicros.median ?? NaN) / (pem?.summary.proxyCpuMicros.median ?? NaN);
    targets.push({
      name: `proxy CPU per full handshake, keyless (default mode) / PEM key ≤ ${goals[key]}x (${key})`,
      met: Number.isFinite(ratio) ? ratio <= goals[key] : undefined,
      value: `${fmt(ratio, 2)}x (${fmt(keyless?.summary.proxyCpuMicros.median)} vs ${fmt(pem?.summary.proxyCpuMicros.median)} µs)`,
    });
  }
  for (const key of KEYS) {
    const r0 = cellOf(r, key, 'auto', 0)?.summary.handshakesPerSec.median ?? NaN;
    const r5 = cellOf(r, key, 'auto', 5)?.summary.handshakesPerSec.median ?? NaN;
    targets.push({ name: `handshake rate at +5 ms ≥ 0.95x the rate at +0 ms, default mode (${key})`, met: Number.isFinite(r5 / r0) ? r5 / r0 >= 0.95 : undefined, value: `${fmt(r5 / r0, 2)}x (${fmt(r5)} vs ${fmt(r0)} handshakes/s)` });
  }
  const paced = (key: KeyKind, server: ProxyServerKind, rttMs: number): number => r.paced.find((c) => c.key === key && c.server === server && c.rttMs === rttMs)?.summary.loopDelayP99Ms.median ?? NaN;
  for (const key of KEYS) {
    const pem = paced(key, 'pem', 0);
    const worst = Math.max(...RTTS_MS.map((rtt) => paced(key, 'auto', rtt)));
    targets.push({ name: `event-loop delay p99 at ${r.pacedRate} handshakes/s within 1 ms of the PEM-key server's, default mode, every RTT (${key})`, met: Number.isFinite(worst - pem) ? worst - pem <= 1 : undefined, value: `worst ${fmt(worst, 1)} ms vs PEM ${fmt(pem, 1)} ms (blocking at +5 ms: ${fmt(paced(key, 'blocking', 5), 1)} ms)` });
  }
  if (soak) {
    targets.push({ name: `RSS flat over ${soak.handshakes} keyless handshakes: last quarter within 5 % of the first`, met: Math.abs(soak.growthPercent) <= 5, value: `${soak.firstQuarterMb.toFixed(1)} -> ${soak.lastQuarterMb.toFixed(1)} MB (${soak.growthPercent.toFixed(1)} %)` });
  }
  return { text: lines.join('\n'), targets };
}
