/**
 * Runs a gateway under `node --cpu-prof` with SignStream and unary load (ECDSA P-256, 64 in
 * flight) and summarizes where its main thread spends CPU: self time by function and by area
 * (grpc-js, protobuf, TLS/HTTP2 in node internals, the gateway's own files, logging, GC...).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { GatewayProcess } from './gateway-process';
import { LoadProcess } from './load-process';
import { markdownTable } from './table';
import { SIGN_KEYS, type GatewayLoadSpec } from '../sign/sign-specs';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileSummary {
  profileFiles: string[];
  /** Main-thread profile: share of non-idle samples by area. */
  areas: Array<{ area: string; share: number }>;
  /** Top functions by self time. */
  functions: Array<{ fn: string; where: string; share: number }>;
  text: string;
}

function area(url: string, fn: string): string {
  if (fn === '(garbage collector)') return 'GC';
  if (fn === '(program)') return '(program: native, outside JS)';
  if (url.includes('@grpc/grpc-js')) return 'grpc-js';
  if (url.includes('@bufbuild/protobuf') || url.includes('proto/generated')) return 'protobuf encode/decode';
  if (url.includes('prom-client')) return 'prom-client (metrics)';
  if (url.includes('generic-pool')) return 'generic-pool';
  if (url.includes('/server/observability/logger')) return 'gateway: logger/audit';
  if (url.includes('/server/')) return `gateway: ${path.basename(path.dirname(url))}/${path.basename(url)}`;
  if (url.startsWith('node:') || url === '') return fn.startsWith('(') ? fn : `node internals (${url.replace(/^node:/, '') || 'native'})`;
  return url;
}

function summarize(file: string): { areas: Map<string, number>; fns: Map<string, number>; total: number } {
  const profile = JSON.parse(fs.readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  for (let i = 0; i < profile.samples.length; i++) self.set(profile.samples[i], (self.get(profile.samples[i]) ?? 0) + (profile.timeDeltas[i] ?? 0));
  const areas = new Map<string, number>();
  const fns = new Map<string, number>();
  let total = 0;
  for (const [id, micros] of self) {
    const n = byId.get(id);
    if (!n) continue;
    const { functionName, url, lineNumber } = n.callFrame;
    if (functionName === '(idle)') continue;
    total += micros;
    const a = area(url, functionName);
    areas.set(a, (areas.get(a) ?? 0) + micros);
    const key = `${functionName || '(anonymous)'}\u0000${url.replace(/^.*node_modules\//, '').replace(/^.*\/dist\//, 'dist/')}:${lineNumber + 1}`;
    fns.set(key, (fns.get(key) ?? 0) + micros);
  }
  return { areas, fns, total };
}

export async function profileGateway(workDir: string, windowMs: number, log: (l: string) => void): Promise<ProfileSummary> {
  const profDir = path.join(workDir, 'cpu-profile');
  fs.rmSync(profDir, { recursive: true, force: true });
  const gateway = await GatewayProcess.start(workDir, {
    logFile: path.join(workDir, 'gateway-prof.stderr.log'), logging: { level: 'info', audit: true }, execArgv: ['--cpu-prof', `--cpu-prof-dir=${profDir}`],
  });
  const load = new LoadProcess<GatewayLoadSpec>(path.join(__dirname, '..', 'sign', 'gateway-load.js'));
  const env = gateway.env;
  try {
    for (const rpc of ['stream', 'unary'] as const) {
      await load.start({
        endpoint: gateway.endpoint, caFile: env.pki.ca, certFile: env.pki.clients.dev.cert, keyFile: env.pki.clients.dev.key,
        ...SIGN_KEYS['ecdsa-p256'], rpc, concurrency: 64,
      });
      await new Promise((r) => setTimeout(r, windowMs));
      const snap = await load.mark();
      log(`  profile load ${rpc}@64: ${Math.round(snap.ops / (snap.wallMicros / 1e6))} ops/s`);
      await load.stop();
    }
  } finally {
    await load.exit();
    await gateway.stop();
  }
  const files = fs.existsSync(profDir) ? fs.readdirSync(profDir).filter((f) => f.endsWith('.cpuprofile')).map((f) => path.join(profDir, f)) : [];
  if (files.length === 0) throw new Error('no .cpuprofile written');
  // Node names them CPU.<date>.<time>.<pid>.<thread id>.<seq>.cpuprofile; the main thread is thread 0.
  // (Not the largest: a sign thread blocked in Atomics.wait counts as busy in its profile.)
  const mainFile = files.find((f) => /\.\d+\.0\.\d+\.cpuprofile$/.test(f)) ?? files[0];
  const parsed = [{ f: mainFile, s: summarize(mainFile) }];
  const main = parsed[0].s;
  const areas = [...main.areas].map(([a, v]) => ({ area: a, share: v / main.total })).sort((x, y) => y.share - x.share);
  const functions = [...main.fns].map(([k, v]) => {
    const [fn, where] = k.split('\u0000');
    return { fn, where, share: v / main.total };
  }).sort((x, y) => y.share - x.share).slice(0, 25);
  const keep = path.resolve(__dirname, '..', '..', '..', 'bench', 'results', 'gateway-main-thread.cpuprofile.json');
  fs.copyFileSync(parsed[0].f, keep);
  const text = [
    `Main thread, SignStream then unary, ECDSA P-256, 64 in flight, ${windowMs} ms each; ${(main.total / 1000).toFixed(0)} ms of non-idle samples. Profile kept as bench/results/gateway-main-thread.cpuprofile.json (open in Chrome DevTools).`,
    '',
    markdownTable(['area', 'share of main-thread CPU'], areas.filter((a) => a.share >= 0.005).map((a) => [a.area, `${(a.share * 100).toFixed(1)}%`])),
    '',
    markdownTable(['function (self time)', 'where', 'share'], functions.map((f) => [f.fn, f.where, `${(f.share * 100).toFixed(1)}%`])),
  ].join('\n');
  return { profileFiles: files, areas, functions, text };
}
