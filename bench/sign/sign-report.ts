/** Tables, ratios and target verdicts for the sign path. */
import { createPrivateKey, generateKeyPairSync, randomBytes, sign, constants } from 'node:crypto';
import { fmt, fmtSpread, markdownTable } from '../support/table';
import type { Target } from '../support/targets';
import type { SignBenchResult, SignCell } from './sign-bench';
import type { KeyKind } from './sign-specs';

/** CPU of one local RSA-2048 PSS signature with Node's OpenSSL (what a proxy with a PEM key pays), µs. */
export function localRsaSignCpuMicros(ms = 300): number {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const key = createPrivateKey(privateKey.export({ type: 'pkcs8', format: 'pem' }));
  const digestInput = randomBytes(64);
  const opts = { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 };
  for (let i = 0; i < 20; i++) sign('sha256', digestInput, opts);
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  let n = 0;
  while (performance.now() - t0 < ms) {
    sign('sha256', digestInput, opts);
    n++;
  }
  const c = process.cpuUsage(c0);
  return (c.user + c.system) / n;
}

export interface SignDerived {
  key: KeyKind;
  /** Best in-process throughput (max of the sync and async medians). */
  inProcessBestOpsPerSec: number;
  inProcessBestMode: 'sync' | 'async';
  /** CPU of one in-process sync signature (C_SignInit + C_Sign): the HSM operation's own cost. */
  hsmOpCpuMicros: number;
  rows: Array<{
    variant: 'unary' | 'stream';
    concurrency: number;
    throughputRatio: number;
    /** Gateway CPU per sign minus hsmOpCpuMicros (method A, see BENCHMARKS.md). */
    gatewayCpuExclHsmMicros: number;
    /** Gateway CPU per sign minus the measured HSM call time (method B: a lower bound). */
    gatewayCpuExclHsmWallMicros: number;
  }>;
  /** Gateway unary p50 at concurrency 1 minus in-process sync p50, µs. */
  addedP50UnaryMicros: number;
  addedP50StreamMicros: number;
}

const find = (r: SignBenchResult, key: KeyKind, variant: string, concurrency?: number): SignCell | undefined =>
  r.cells.find((c) => c.key === key && c.side !== 'stub' && c.variant === variant && (concurrency === undefined || c.concurrency === concurrency));

export function deriveSign(r: SignBenchResult): SignDerived[] {
  const keys = [...new Set(r.cells.map((c) => c.key))];
  return keys.map((key) => {
    const sync = find(r, key, 'sync');
    const asyncCell = find(r, key, 'async');
    const syncOps = sync?.summary.opsPerSec.median ?? NaN;
    const asyncOps = asyncCell?.summary.opsPerSec.median ?? NaN;
    const best = Math.max(syncOps, Number.isFinite(asyncOps) ? asyncOps : -Infinity);
    const hsmOp = sync?.summary.clientCpuMicrosPerOp.median ?? NaN;
    const rows = r.cells.filter((c) => c.key === key && c.side === 'gateway').map((c) => ({
      variant: c.variant as 'unary' | 'stream',
      concurrency: c.concurrency,
      throughputRatio: c.summary.opsPerSec.median / best,
      gatewayCpuExclHsmMicros: c.summary.gatewayCpuMicrosPerOp.median - hsmOp,
      gatewayCpuExclHsmWallMicros: c.summary.gatewayCpuMicrosPerOp.median - c.summary.gatewayHsmMicrosPerOp.median,
    }));
    const p50 = sync?.summary.p50Micros.median ?? NaN;
    return {
      key, inProcessBestOpsPerSec: best, inProcessBestMode: syncOps >= asyncOps || !Number.isFinite(asyncOps) ? 'sync' : 'async', hsmOpCpuMicros: hsmOp, rows,
      addedP50UnaryMicros: (find(r, key, 'unary', 1)?.summary.p50Micros.median ?? NaN) - p50,
      addedP50StreamMicros: (find(r, key, 'stream', 1)?.summary.p50Micros.median ?? NaN) - p50,
    };
  });
}

export function signTables(r: SignBenchResult, derived: SignDerived[]): string {
  const header = ['key', 'side', 'rpc / mode', 'in flight', 'ops/s', 'x in-process', 'p50 µs', 'p99 µs', 'load proc CPU µs/op', 'server CPU µs/op', 'server main thread µs/op', 'gw excl. HSM µs/op'];
  const rows = r.cells.map((c) => {
    const d = derived.find((x) => x.key === c.key);
    const row = c.side === 'gateway' ? d?.rows.find((x) => x.variant === c.variant && x.concurrency === c.concurrency) : undefined;
    return [
      c.key, c.side, c.variant, String(c.concurrency),
      fmtSpread(c.summary.opsPerSec), row ? fmt(row.throughputRatio, 2) : '',
      fmtSpread(c.summary.p50Micros), fmtSpread(c.summary.p99Micros),
      fmtSpread(c.summary.clientCpuMicrosPerOp), fmtSpread(c.summary.gatewayCpuMicrosPerOp), fmtSpread(c.summary.gatewayMainThreadCpuMicrosPerOp),
      row ? fmt(row.gatewayCpuExclHsmMicros) : '',
    ];
  });
  const lines = [markdownTable(header, rows), ''];
  for (const d of derived) {
    lines.push(`- ${d.key}: in-process best ${Math.round(d.inProcessBestOpsPerSec)} ops/s (${d.inProcessBestMode}); HSM op CPU (in-process sync) ${fmt(d.hsmOpCpuMicros)} µs; added p50 at 1 in flight: unary ${fmt(d.addedP50UnaryMicros)} µs, SignStream ${fmt(d.addedP50StreamMicros)} µs`);
  }
  lines.push(`- gateway peak RSS (VmHWM) ${(r.gatewayPeakRssBytes / 2 ** 20).toFixed(1)} MiB; pool ${r.sessions} sessions, ${r.signThreads} sign threads`);
  if (r.soak) {
    const s = r.soak;
    lines.push(`- RSS soak: ${s.seconds} s SignStream x${s.concurrency} ${s.key} at ${Math.round(s.opsPerSec)} ops/s: first-quarter mean ${(s.firstQuarterMeanRss / 2 ** 20).toFixed(1)} MiB, last-quarter mean ${(s.lastQuarterMeanRss / 2 ** 20).toFixed(1)} MiB (${(s.growth * 100).toFixed(1)}%), peak ${(s.peakRss / 2 ** 20).toFixed(1)} MiB`);
  }
  return lines.join('\n');
}

export function signTargets(r: SignBenchResult, derived: SignDerived[], localRsaMicros: number): Target[] {
  const targets: Target[] = [];
  // Issue 13's targets: ECDSA P-256 is the gateway's own cost; RSA-2048 must stay HSM-bound.
  for (const d of derived) {
    const s64 = d.rows.find((x) => x.variant === 'stream' && x.concurrency === 64);
    const ratio = d.key === 'rsa-2048' ? 0.95 : 0.6;
    if (s64) targets.push({ name: `SignStream@64 throughput ≥ ${ratio}x in-process (${d.key})`, met: s64.throughputRatio >= ratio, value: `${s64.throughputRatio.toFixed(2)}x (vs ${d.inProcessBestMode} ${Math.round(d.inProcessBestOpsPerSec)} ops/s)` });
    if (d.key !== 'ecdsa-p256') continue;
    for (const [variant, limit] of [['stream', 60], ['unary', 150]] as const) {
      const row = d.rows.find((x) => x.variant === variant && x.concurrency === 64) ?? d.rows.find((x) => x.variant === variant);
      if (row) targets.push({ name: `gateway CPU per sign excl. HSM ≤ ${limit} µs, ${variant}@${row.concurrency} (${d.key})`, met: row.gatewayCpuExclHsmMicros <= limit, value: `${fmt(row.gatewayCpuExclHsmMicros)} µs (lower bound, minus HSM wall time: ${fmt(row.gatewayCpuExclHsmWallMicros)} µs)` });
    }
    targets.push({ name: `added p50 at 1 in flight ≤ 200 µs, SignStream (${d.key})`, met: d.addedP50StreamMicros <= 200, value: `${fmt(d.addedP50StreamMicros)} µs (unary: ${fmt(d.addedP50UnaryMicros)} µs)` });
  }
  const rsa = r.cells.filter((c) => c.key === 'rsa-2048' && c.side === 'gateway');
  if (rsa.length) {
    const best = rsa.reduce((a, b) => (a.summary.clientCpuMicrosPerOp.median <= b.summary.clientCpuMicrosPerOp.median ? a : b));
    const unary1 = rsa.find((c) => c.variant === 'unary' && c.concurrency === 1);
    targets.push({
      name: 'client CPU per remote RSA-2048 signature < local signing CPU (gRPC client)',
      met: best.summary.clientCpuMicrosPerOp.median < localRsaMicros,
      value: `${fmt(best.summary.clientCpuMicrosPerOp.median)} µs (${best.variant}@${best.concurrency}; unary@1 ${fmt(unary1?.summary.clientCpuMicrosPerOp.median)} µs) vs local ${fmt(localRsaMicros)} µs`,
    });
  }
  if (r.soak) targets.push({ name: `gateway RSS flat under ${r.soak.seconds} s of full load (growth ≤ 5%)`, met: r.soak.growth <= 0.05, value: `${(r.soak.growth * 100).toFixed(1)}%` });
  return targets;
}
