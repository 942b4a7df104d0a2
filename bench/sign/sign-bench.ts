/**
 * Section 1, the sign path: in-process pkcs11js (sync, async) against the gateway (unary Sign
 * and SignStream at several concurrencies, from a separate load process), interleaved over
 * several rounds, then a sustained run that watches the gateway's RSS.
 */
import * as path from 'node:path';
import type { GatewayProcess } from '../support/gateway-process';
import { StubSigner, type ServerUnderTest } from '../support/server-under-test';
import { LoadProcess } from '../support/load-process';
import type { LoadSnapshot } from '../support/load-protocol';
import { memory } from '../support/proc-stats';
import { spread, type Spread } from '../support/stats';
import { SIGN_KEYS, type GatewayLoadSpec, type InProcessSpec, type KeyKind } from './sign-specs';

export interface Timing {
  rounds: number;
  warmupMs: number;
  windowMs: number;
}

/** One measured window of one cell. */
export interface SignSample {
  ops: number;
  errors: number;
  firstError?: string;
  opsPerSec: number;
  p50Micros: number;
  p99Micros: number;
  /** CPU of the load process (in-process: the process that signs) per operation, µs. */
  clientCpuMicrosPerOp: number;
  /** Gateway cells only. */
  gatewayCpuMicrosPerOp?: number;
  gatewayMainThreadCpuMicrosPerOp?: number;
  /** hsmgw_hsm_operation_seconds (wall time of C_SignInit + C_Sign on a sign thread) per op, µs. */
  gatewayHsmMicrosPerOp?: number;
  gatewayRssBytes?: number;
}

export type SignVariant = 'sync' | 'async' | 'unary' | 'stream';

export interface SignCell {
  key: KeyKind;
  /** stub: the grpc-js floor (bench/sign/stub-signer.ts), no HSM; its CPU is in the gateway columns. */
  side: 'in-process' | 'gateway' | 'stub';
  variant: SignVariant;
  concurrency: number;
  samples: SignSample[];
  summary: Record<'opsPerSec' | 'p50Micros' | 'p99Micros' | 'clientCpuMicrosPerOp' | 'gatewayCpuMicrosPerOp' | 'gatewayMainThreadCpuMicrosPerOp' | 'gatewayHsmMicrosPerOp', Spread>;
}

export interface RssSoak {
  key: KeyKind;
  rpc: 'stream';
  concurrency: number;
  seconds: number;
  opsPerSec: number;
  /** RSS sampled once a second, bytes. */
  rssSamples: number[];
  firstQuarterMeanRss: number;
  lastQuarterMeanRss: number;
  peakRss: number;
  /** (last-quarter mean - first-quarter mean) / first-quarter mean. */
  growth: number;
}

export interface SignBenchResult {
  sessions: number;
  signThreads: number;
  concurrencies: number[];
  cells: SignCell[];
  gatewayPeakRssBytes: number;
  soak?: RssSoak;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface CellPlan {
  key: KeyKind;
  side: 'in-process' | 'gateway' | 'stub';
  variant: SignVariant;
  concurrency: number;
}

export interface SignBenchOptions {
  gateway: GatewayProcess;
  timing: Timing;
  concurrencies: number[];
  keys: KeyKind[];
  /** The gateway's pool size (pkcs11.sessions.max): the baseline opens as many sessions. */
  sessions: number;
  signThreads: number;
  soakSeconds: number;
  log(line: string): void;
}

async function measure<Spec>(load: LoadProcess<Spec>, spec: Spec, timing: Timing, gateway?: ServerUnderTest): Promise<SignSample> {
  await load.start(spec);
  try {
    await sleep(timing.warmupMs);
    await load.mark();
    const g0 = gateway ? await gateway.counters() : undefined;
    await sleep(timing.windowMs);
    const snap: LoadSnapshot = await load.mark();
    const g1 = gateway ? await gateway.counters() : undefined;
    const perOp = (v: number): number => (snap.ops > 0 ? v / snap.ops : NaN);
    const sample: SignSample = {
      ops: snap.ops, errors: snap.errors, firstError: snap.firstError,
      opsPerSec: snap.ops / (snap.wallMicros / 1e6),
      p50Micros: snap.p50Micros, p99Micros: snap.p99Micros,
      clientCpuMicrosPerOp: perOp(snap.cpuMicros),
    };
    if (gateway && g0 && g1) {
      sample.gatewayCpuMicrosPerOp = perOp(g1.cpuMicros - g0.cpuMicros);
      sample.gatewayMainThreadCpuMicrosPerOp = perOp(g1.mainThreadCpuMicros - g0.mainThreadCpuMicros);
      sample.gatewayHsmMicrosPerOp = ((g1.hsmSeconds - g0.hsmSeconds) * 1e6) / Math.max(1, g1.hsmCount - g0.hsmCount);
      sample.gatewayRssBytes = gateway.memory().rss;
    }
    return sample;
  } finally {
    await load.stop();
  }
}

function summarize(plan: CellPlan, samples: SignSample[]): SignCell {
  const of = (f: (s: SignSample) => number | undefined): Spread => spread(samples.map((s) => f(s) ?? NaN));
  return {
    ...plan,
    samples,
    summary: {
      opsPerSec: of((s) => s.opsPerSec),
      p50Micros: of((s) => s.p50Micros),
      p99Micros: of((s) => s.p99Micros),
      clientCpuMicrosPerOp: of((s) => s.clientCpuMicrosPerOp),
      gatewayCpuMicrosPerOp: of((s) => s.gatewayCpuMicrosPerOp),
      gatewayMainThreadCpuMicrosPerOp: of((s) => s.gatewayMainThreadCpuMicrosPerOp),
      gatewayHsmMicrosPerOp: of((s) => s.gatewayHsmMicrosPerOp),
    },
  };
}

export async function runSignBench(o: SignBenchOptions): Promise<SignBenchResult> {
  const { gateway, timing } = o;
  const env = gateway.env;
  const dist = path.join(__dirname);
  const gatewayLoad = new LoadProcess<GatewayLoadSpec>(path.join(dist, 'gateway-load.js'));
  const inProcess = new LoadProcess<InProcessSpec>(path.join(dist, 'in-process-load.js'));
  const client = env.pki.clients.dev;
  const stub = await StubSigner.start(path.join(dist, 'stub-signer.js'), env.pki.ca, env.pki.serverCert, env.pki.serverKey);
  try {
    const plans: CellPlan[] = [];
    for (const key of o.keys) {
      plans.push({ key, side: 'in-process', variant: 'sync', concurrency: 1 });
      plans.push({ key, side: 'in-process', variant: 'async', concurrency: o.sessions });
      for (const variant of ['unary', 'stream'] as const) {
        for (const concurrency of o.concurrencies) plans.push({ key, side: 'gateway', variant, concurrency });
      }
    }
    for (const variant of ['unary', 'stream'] as const) {
      for (const concurrency of [1, 64]) plans.push({ key: o.keys[0], side: 'stub', variant, concurrency });
    }
    const samples = plans.map((): SignSample[] => []);
    for (let round = 0; round < timing.rounds; round++) {
      // Interleaved: every cell once per round, starting at a different cell each round.
      for (let k = 0; k < plans.length; k++) {
        const i = (k + round * Math.ceil(plans.length / timing.rounds)) % plans.length;
        const plan = plans[i];
        const { keyName, algorithm } = SIGN_KEYS[plan.key];
        let sample: SignSample;
        if (plan.side === 'in-process') {
          sample = await measure(inProcess, {
            modulePath: env.modulePath, softhsmConf: env.softhsmConf, tokenLabel: env.tokenLabel, pinFile: env.pinFile,
            keyLabel: keyName, algorithm, mode: plan.variant as 'sync' | 'async', sessions: o.sessions,
          }, timing);
        } else {
          const server: ServerUnderTest = plan.side === 'stub' ? stub : gateway;
          sample = await measure(gatewayLoad, {
            endpoint: server.endpoint, caFile: env.pki.ca, certFile: client.cert, keyFile: client.key,
            keyName, algorithm, rpc: plan.variant as 'unary' | 'stream', concurrency: plan.concurrency,
          }, timing, server);
        }
        samples[i].push(sample);
        o.log(`  round ${round + 1}/${timing.rounds} ${plan.key} ${plan.side} ${plan.variant} x${plan.concurrency}: ${Math.round(sample.opsPerSec)} ops/s${sample.errors ? ` (${sample.errors} errors: ${sample.firstError})` : ''}`);
      }
    }
    const cells = plans.map((plan, i) => summarize(plan, samples[i]));
    const result: SignBenchResult = {
      sessions: o.sessions, signThreads: o.signThreads, concurrencies: o.concurrencies, cells, gatewayPeakRssBytes: gateway.memory().peakRss,
    };
    if (o.soakSeconds > 0) result.soak = await soak(gatewayLoad, o);
    result.gatewayPeakRssBytes = gateway.memory().peakRss;
    return result;
  } finally {
    await Promise.all([gatewayLoad.exit(), inProcess.exit(), stub.stop()]);
  }
}

/** Sustained SignStream load at 64 in flight, RSS sampled once a second. */
async function soak(load: LoadProcess<GatewayLoadSpec>, o: SignBenchOptions): Promise<RssSoak> {
  const env = o.gateway.env;
  const key: KeyKind = 'ecdsa-p256';
  const concurrency = 64;
  await load.start({
    endpoint: o.gateway.endpoint, caFile: env.pki.ca, certFile: env.pki.clients.dev.cert, keyFile: env.pki.clients.dev.key,
    ...SIGN_KEYS[key], rpc: 'stream', concurrency,
  });
  const rssSamples: number[] = [];
  let snap: LoadSnapshot;
  try {
    await sleep(o.timing.warmupMs);
    await load.mark();
    for (let s = 0; s < o.soakSeconds; s++) {
      await sleep(1000);
      rssSamples.push(memory(o.gateway.pid).rss);
    }
    snap = await load.mark();
  } finally {
    await load.stop();
  }
  const q = Math.max(1, Math.floor(rssSamples.length / 4));
  const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
  const first = mean(rssSamples.slice(0, q));
  const last = mean(rssSamples.slice(-q));
  o.log(`  soak: ${o.soakSeconds} s SignStream x${concurrency} ${key}: RSS ${(first / 2 ** 20).toFixed(1)} -> ${(last / 2 ** 20).toFixed(1)} MiB`);
  return {
    key, rpc: 'stream', concurrency, seconds: o.soakSeconds, opsPerSec: snap.ops / (snap.wallMicros / 1e6),
    rssSamples, firstQuarterMeanRss: first, lastQuarterMeanRss: last, peakRss: memory(o.gateway.pid).peakRss, growth: (last - first) / first,
  };
}
