/**
 * Soak: mixed load against a gateway on the fault-injecting PKCS#11 module, with faults injected
 * at random, then the invariants checked.
 *
 *   npm run soak -- --seconds 300 [--seed N] [--json]
 *
 * Load: unary Sign and SignStream, EC and RSA keys, several identities, valid requests (80 %) and
 * invalid ones whose exact code is known (20 %). Faults (seeded): sessions invalidated, transient
 * device errors, a lost login, HSM latency, a brief device removal. The last fifth of the run is
 * fault-free, so the gateway must be fully back by the end.
 *
 * Violations (exit code 1):
 *   - a request without an answer (sent ≠ answered), or a SignStream that broke;
 *   - an invalid request answered with anything but its exact code;
 *   - a valid request answered with a code other than OK / UNAVAILABLE / DEADLINE_EXCEEDED /
 *     RESOURCE_EXHAUSTED (the honest answers to an HSM fault), or any failure in the fault-free tail;
 *   - a signature that does not verify with the key's public key;
 *   - RSS growth: the median of the last third of samples above the middle third's by more than
 *     the tolerance;
 *   - a leaked session: pool in use, waiting requests or in-flight requests not back to 0 at the
 *     end (/metrics and the pool itself), or the gateway not ready.
 * Needs a build (npm run build:ts) and softhsm2 + gcc; the SoftHSM test token is prepared if missing.
 */
import * as fs from 'node:fs';
import { createHash, randomInt } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { SignatureAlgorithm, SignerClient, SignRequest, SignResponse } from '../proto/generated/hsmgateway/v1/signer';
import { FaultController } from '../test/faulty-pkcs11/faulty-module';
import { startFaultyGateway, type TestGateway } from '../test/support/test-gateway';
import { parsePrometheusText, sampleValue } from '../test/support/prometheus-text';
import { verifySignature } from '../test/support/signatures';
import { Prng } from '../test/support/prng';

export interface SoakOptions {
  seconds: number;
  seed?: number;
  /** Unary workers per identity (default 3). */
  unaryWorkers?: number;
  /** Items in flight per SignStream (default 16). */
  streamWindow?: number;
  /** RSS tolerance: relative (default 0.15) plus absolute bytes (default 32 MiB). */
  rssTolerance?: { relative: number; absoluteBytes: number };
  log?: (line: string) => void;
}

export interface SoakReport {
  seed: number;
  seconds: number;
  sent: number;
  answered: number;
  /** "<rpc> <valid|invalid> <CODE>" → count. */
  outcomes: Record<string, number>;
  verified: number;
  faults: Record<string, number>;
  rss: { samples: number; middleMedianBytes: number; lastMedianBytes: number; heapMiddleMedianBytes: number; heapLastMedianBytes: number };
  end: { inUse: number; waiting: number; inFlight: number; ready: boolean };
  violations: string[];
}


type Identity = 'dev' | 'pssOnly' | 'wildcard' | 'dnsOnly' | 'nobody';

interface Planned {
  identity: Identity;
  req: SignRequest;
  /** The signed message (valid requests). */
  message?: Buffer;
  /** Exact code for an invalid request; undefined for a valid one. */
  expected?: grpc.status;
}

const S = SignatureAlgorithm;
const HASH: Record<number, 'sha256' | 'sha384' | 'sha512'> = { 1: 'sha256', 2: 'sha384', 3: 'sha512', 4: 'sha256', 5: 'sha384', 6: 'sha512', 7: 'sha256', 8: 'sha384', 9: 'sha512' };
/** What each identity may do (the test gateway's default rules). */
const VALID: ReadonlyArray<{ identity: Identity; key: string; algorithms: readonly SignatureAlgorithm[] }> = [
  { identity: 'dev', key: 'dev-ec', algorithms: [S.ECDSA_SHA256, S.ECDSA_SHA384, S.ECDSA_SHA512] },
  { identity: 'dev', key: 'dev-rsa', algorithms: [S.RSA_PKCS1_SHA256, S.RSA_PSS_SHA256, S.RSA_PSS_SHA384, S.RSA_PKCS1_SHA512] },
  { identity: 'dev', key: 'alt-ec', algorithms: [S.ECDSA_SHA256] },
  { identity: 'pssOnly', key: 'dev-rsa', algorithms: [S.RSA_PSS_SHA256] },
  { identity: 'wildcard', key: 'test-ec384', algorithms: [S.ECDSA_SHA384, S.ECDSA_SHA256] },
  { identity: 'wildcard', key: 'test-rsa3072', algorithms: [S.RSA_PSS_SHA256] },
  { identity: 'dnsOnly', key: 'dev-rsa', algorithms: [S.RSA_PKCS1_SHA256, S.RSA_PSS_SHA512] },
];
const FAULT_TOLERANT = new Set([grpc.status.OK, grpc.status.UNAVAILABLE, grpc.status.DEADLINE_EXCEEDED, grpc.status.RESOURCE_EXHAUSTED]);

function plan(rng: Prng, identity: Identity, id: bigint): Planned {
  const digestOf = (alg: SignatureAlgorithm, m: Buffer): Buffer => createHash(HASH[alg]).update(m).digest();
  if (identity === 'nobody' || rng.next() < 0.2) {
    // Invalid requests, each with the one code it must get, HSM faults or not.
    const r = identity === 'nobody' ? 0 : rng.int(4);
    const m = rng.bytes(32);
    // Validation comes after authorization: malformed requests use a key the identity may use.
    const own = VALID.find((v) => v.identity === identity)?.key ?? 'dev-ec';
    switch (r) {
      case 0: return { identity, expected: grpc.status.PERMISSION_DENIED, req: { key: identity === 'nobody' ? 'dev-ec' : 'not-a-key', algorithm: S.ECDSA_SHA256, input: { $case: 'digest', value: digestOf(S.ECDSA_SHA256, m) }, requestId: id } };
      case 1: return { identity, expected: grpc.status.INVALID_ARGUMENT, req: { key: own, algorithm: own.includes('rsa') ? S.RSA_PSS_SHA256 : S.ECDSA_SHA256, input: { $case: 'digest', value: rng.bytes(31) }, requestId: id } };
      case 2: return { identity, expected: grpc.status.INVALID_ARGUMENT, req: { key: '../dev-ec', algorithm: S.ECDSA_SHA256, input: { $case: 'message', value: m }, requestId: id } };
      default: return identity === 'wildcard'
        ? { identity, expected: grpc.status.NOT_FOUND, req: { key: 'test-missing', algorithm: S.ECDSA_SHA256, input: { $case: 'message', value: m }, requestId: id } }
        : { identity, expected: grpc.status.INVALID_ARGUMENT, req: { key: own, algorithm: 99 as SignatureAlgorithm, input: { $case: 'message', value: m }, requestId: id } };
    }
  }
  const choice = rng.pick(VALID.filter((v) => v.identity === identity));
  const algorithm = rng.pick(choice.algorithms);
  const message = rng.bytes(16 + rng.int(200));
  const input = rng.next() < 0.5 ? { $case: 'digest' as const, value: digestOf(algorithm, message) } : { $case: 'message' as const, value: message };
  return { identity, message, req: { key: choice.key, algorithm, input, requestId: id } };
}

const median = (xs: number[]): number => {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
};

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function runSoak(options: SoakOptions): Promise<SoakReport> {
  const seed = options.seed ?? randomInt(2 ** 31);
  const log = options.log ?? ((line: string) => console.log(line));
  const seconds = options.seconds;
  const rng = new Prng(seed);
  const faultRng = new Prng(seed ^ 0x9e3779b9);
  const violations: string[] = [];
  const violate = (v: string): void => { if (violations.length < 200) violations.push(v); };
  const outcomes = new Map<string, number>();
  const count = (k: string): void => { outcomes.set(k, (outcomes.get(k) ?? 0) + 1); };
  const faultsInjected = new Map<string, number>();
  let sent = 0;
  let answered = 0;
  let verified = 0;
  let nextId = 1n;

  log(`# soak: ${seconds} s, seed ${seed} (replay: npm run soak -- --seconds ${seconds} --seed ${seed})`);
  const faults = new FaultController();
  const t0 = Date.now();
  const gw: TestGateway = await startFaultyGateway(faults, {
    pkcs11: { sessions: { min: 2, max: 6, acquireTimeoutMs: 1500, maxWaiting: 256 }, signThreads: 2, operationTimeoutMs: 1500, healthCheckIntervalMs: 200, reconnectBackoffMs: { initial: 100, max: 800 } },
    limits: { requestTimeoutMs: 3000 },
  });
  const started = Date.now();
  log(`# gateway started in ${started - t0} ms`);
  const loadEnd = started + seconds * 1000;
  const faultFreeFrom = started + seconds * 800; // the last fifth has no faults
  const rssSamples: Array<{ t: number; rss: number; heap: number }> = [];
  try {
    const clients = new Map<Identity, SignerClient>();
    for (const id of ['dev', 'pssOnly', 'wildcard', 'dnsOnly', 'nobody'] as const) clients.set(id, gw.rawClient(id));
    const spki = new Map<string, Buffer>();
    const dev = clients.get('dev') as SignerClient;
    for (const key of ['dev-ec', 'dev-rsa', 'alt-ec', 'test-ec384', 'test-rsa3072']) {
      spki.set(key, await new Promise<Buffer>((resolve, reject) => dev.getKey({ key }, (err, info) => (err || !info ? reject(err ?? new Error(key)) : resolve(Buffer.from(info.publicKey))))));
    }
    const baseline = gw.gateway.hsm.poolStats;

    /** Judges one answer; `late` marks requests sent in the fault-free tail (after recovery time). */
    const judge = (rpc: string, p: Planned, code: grpc.status, details: string, signature: Buffer | undefined, late: boolean): void => {
      answered++;
      count(`${rpc} ${p.expected === undefined ? 'valid' : 'invalid'} ${grpc.status[code]}`);
      if (p.expected !== undefined) {
        if (code !== p.expected) violate(`${rpc} ${p.identity} ${p.req.key}: expected ${grpc.status[p.expected]}, got ${grpc.status[code]} (${details})`);
        return;
      }
      if (!FAULT_TOLERANT.has(code)) violate(`${rpc} ${p.identity} ${p.req.key} ${S[p.req.algorithm]}: valid request answered ${grpc.status[code]} (${details})`);
      else if (late && code !== grpc.status.OK) violate(`${rpc} ${p.identity} ${p.req.key}: ${grpc.status[code]} in the fault-free tail (${details})`);
      if (code === grpc.status.OK) {
        if (verifySignature(spki.get(p.req.key) as Buffer, p.req.algorithm, p.message as Buffer, signature ?? Buffer.alloc(0))) verified++;
        else violate(`${rpc} ${p.identity} ${p.req.key} ${S[p.req.algorithm]}: signature does not verify`);
      }
    };
    // Requests sent after this point get 1.5 s of fault-free time to recover before they must succeed.
    const isLate = (): boolean => Date.now() > faultFreeFrom + 1500;

    const unaryWorker = async (identity: Identity): Promise<void> => {
      const client = clients.get(identity) as SignerClient;
      while (Date.now() < loadEnd) {
        const p = plan(rng, identity, nextId++);
        const late = isLate();
        sent++;
        await new Promise<void>((resolve) => {
          client.sign(p.req, new grpc.Metadata(), { deadline: Date.now() + 5000 }, (err, res?: SignResponse) => {
            if (err) judge('Sign', p, err.code, err.details, undefined, late);
            else judge('Sign', p, grpc.status.OK, '', Buffer.from(res?.signature ?? []), late);
            resolve();
          });
        });
      }
    };

    const streamWorker = async (identity: Identity): Promise<void> => {
      const client = clients.get(identity) as SignerClient;
      const window = options.streamWindow ?? 16;
      while (Date.now() < loadEnd) {
        const call = client.signStream();
        const pending = new Map<bigint, { p: Planned; late: boolean }>();
        let wake: (() => void) | undefined;
        let broken: grpc.ServiceError | undefined;
        const ended = new Promise<void>((resolve) => {
          call.on('data', (r: SignResponse) => {
            const entry = pending.get(r.requestId);
            if (!entry) { violate(`SignStream ${identity}: an answer for unknown request_id ${r.requestId}`); return; }
            pending.delete(r.requestId);
            judge('SignStream', entry.p, r.errorCode, r.errorMessage, r.errorCode === 0 ? Buffer.from(r.signature) : undefined, entry.late);
            wake?.();
          });
          call.on('error', (err: grpc.ServiceError) => { broken = err; resolve(); wake?.(); });
          call.on('end', () => { resolve(); wake?.(); });
        });
        // A stream lives a few seconds, then a new one is opened: both paths get exercised.
        const streamEnd = Math.min(loadEnd, Date.now() + 2000 + rng.int(4000));
        while (Date.now() < streamEnd && !broken) {
          if (pending.size >= window) { await new Promise<void>((r) => { wake = r; }); continue; }
          const p = plan(rng, identity, nextId++);
          pending.set(p.req.requestId, { p, late: isLate() });
          sent++;
          call.write(p.req);
          if (pending.size % 4 === 0) await new Promise((r) => setImmediate(r));
        }
        call.end();
        const halfClosed = Date.now();
        let timer: NodeJS.Timeout | undefined;
        const finished = await Promise.race([ended.then(() => true), new Promise<boolean>((r) => { timer = setTimeout(() => r(false), 10_000); })]);
        clearTimeout(timer);
        if (!finished) {
          violate(`SignStream ${identity}: not ended 10 s after the client half-closed (${pending.size} items pending)`);
          call.cancel();
        } else if (Date.now() - halfClosed > 5000) {
          violate(`SignStream ${identity}: took ${Date.now() - halfClosed} ms to end after the client half-closed`);
        }
        if (broken) violate(`SignStream ${identity}: the stream broke: ${grpc.status[broken.code]} ${broken.details}`);
        for (const { p } of pending.values()) violate(`SignStream ${identity}: request ${p.req.requestId} (${p.req.key}) never answered`);
      }
    };

    const faultLoop = async (): Promise<void> => {
      while (Date.now() < faultFreeFrom) {
        await sleep(300 + faultRng.int(1200));
        if (Date.now() >= faultFreeFrom) break;
        const kind = faultRng.pick(['session-invalidated', 'session-closed', 'device-error', 'not-logged-in', 'latency', 'device-removed', 'prob-errors'] as const);
        faultsInjected.set(kind, (faultsInjected.get(kind) ?? 0) + 1);
        const hold = 200 + faultRng.int(600);
        switch (kind) {
          case 'session-invalidated': faults.fail('C_Sign', 'CKR_SESSION_HANDLE_INVALID', { times: 1 + faultRng.int(4) }); break;
          case 'session-closed': faults.fail('C_SignInit', 'CKR_SESSION_CLOSED', { times: 1 + faultRng.int(3) }); break;
          case 'device-error': faults.fail('C_Sign', 'CKR_DEVICE_ERROR', { once: true }); break;
          case 'not-logged-in': faults.fail('C_Sign', 'CKR_USER_NOT_LOGGED_IN', { once: true }); break;
          case 'latency': faults.delay('C_Sign', 5 + faultRng.int(40)); break;
          case 'device-removed': faults.removeDevice(); break;
          case 'prob-errors': faults.batch((c) => { c.seed(faultRng.int(1_000_000)); c.fail('C_Sign', 'CKR_SESSION_HANDLE_INVALID', { prob: 0.02 }); }); break;
        }
        await sleep(Math.min(hold, Math.max(0, faultFreeFrom - Date.now())));
        faults.clear();
      }
      faults.clear();
    };

    const rssLoop = async (): Promise<void> => {
      while (Date.now() < loadEnd) {
        const mem = process.memoryUsage();
        rssSamples.push({ t: Date.now() - started, rss: mem.rss, heap: mem.heapUsed });
        await sleep(250);
      }
    };

    const workers: Array<Promise<void>> = [faultLoop(), rssLoop()];
    for (const id of ['dev', 'pssOnly', 'wildcard', 'dnsOnly'] as const) {
      for (let i = 0; i < (options.unaryWorkers ?? 3); i++) workers.push(unaryWorker(id));
      workers.push(streamWorker(id));
    }
    workers.push(unaryWorker('nobody'));
    const progress = setInterval(() => log(`# ${Math.round((Date.now() - started) / 1000)} s: ${sent} sent, ${answered} answered, ${violations.length} violations`), 10_000);
    try {
      await Promise.all(workers);
    } finally {
      clearInterval(progress);
    }
    log(`# load done at ${((Date.now() - started) / 1000).toFixed(1)} s`);
    if (sent !== answered) violate(`${sent} requests sent, ${answered} answered`);

    // Back to baseline: nothing held, nothing waiting, nothing in flight, ready.
    let end = { inUse: -1, waiting: -1, inFlight: -1, ready: false };
    for (let i = 0; i < 40; i++) {
      const m = parsePrometheusText(await (await fetch(gw.metricsUrl)).text());
      const ready = (await fetch(gw.metricsUrl.replace('/metrics', '/readyz'))).status === 200;
      end = { inUse: sampleValue(m, 'hsmgw_pool_sessions_in_use'), waiting: sampleValue(m, 'hsmgw_pool_waiting_requests'), inFlight: sampleValue(m, 'hsmgw_in_flight_requests'), ready };
      if (end.inUse === 0 && end.waiting === 0 && end.inFlight === 0 && ready && gw.gateway.hsm.poolStats.inUse === 0) break;
      await sleep(100);
    }
    if (end.inUse !== 0 || end.waiting !== 0 || end.inFlight !== 0) violate(`not back to baseline: ${JSON.stringify(end)} (pool ${JSON.stringify(gw.gateway.hsm.poolStats)}, at start ${JSON.stringify(baseline)})`);
    if (gw.gateway.hsm.poolStats.inUse !== 0) violate(`pool still holds ${gw.gateway.hsm.poolStats.inUse} sessions`);
    if (gw.gateway.hsm.poolStats.size > gw.config.pkcs11.sessions.max) violate(`pool size ${gw.gateway.hsm.poolStats.size} above max`);
    if (!end.ready) violate('the gateway is not ready at the end');

    // RSS: the last third must not sit above the middle third (the first third is warm-up).
    const third = Math.floor(rssSamples.length / 3);
    const middle = median(rssSamples.slice(third, 2 * third).map((s) => s.rss));
    const last = median(rssSamples.slice(2 * third).map((s) => s.rss));
    const tol = options.rssTolerance ?? { relative: 0.15, absoluteBytes: 32 * 1024 * 1024 };
    if (third < 3) violate(`too few RSS samples (${rssSamples.length})`);
    else if (last > middle * (1 + tol.relative) + tol.absoluteBytes) violate(`RSS grew: middle third median ${(middle / 2 ** 20).toFixed(1)} MiB, last third ${(last / 2 ** 20).toFixed(1)} MiB`);

    const report: SoakReport = {
      seed, seconds, sent, answered, verified,
      outcomes: Object.fromEntries([...outcomes].sort()),
      faults: Object.fromEntries([...faultsInjected].sort()),
      rss: {
        samples: rssSamples.length, middleMedianBytes: middle, lastMedianBytes: last,
        heapMiddleMedianBytes: median(rssSamples.slice(third, 2 * third).map((s) => s.heap)), heapLastMedianBytes: median(rssSamples.slice(2 * third).map((s) => s.heap)),
      },
      end, violations,
    };
    for (const c of clients.values()) c.close();
    return report;
  } finally {
    faults.clear();
    const stopping = Date.now();
    await gw.stop();
    log(`# gateway stopped in ${Date.now() - stopping} ms`);
    faults.dispose();
  }
}

/** The summary table. */
export function formatReport(r: SoakReport): string {
  const rows: Array<[string, string]> = [
    ['seed', String(r.seed)],
    ['duration', `${r.seconds} s`],
    ['sent / answered', `${r.sent} / ${r.answered}`],
    ['signatures verified', String(r.verified)],
    ...Object.entries(r.outcomes).map(([k, v]): [string, string] => [`  ${k}`, String(v)]),
    ['faults injected', Object.entries(r.faults).map(([k, v]) => `${k} ${v}`).join(', ') || 'none'],
    ['RSS median middle → last third', `${(r.rss.middleMedianBytes / 2 ** 20).toFixed(1)} → ${(r.rss.lastMedianBytes / 2 ** 20).toFixed(1)} MiB (${r.rss.samples} samples)`],
    ['JS heap used, same thirds', `${(r.rss.heapMiddleMedianBytes / 2 ** 20).toFixed(1)} → ${(r.rss.heapLastMedianBytes / 2 ** 20).toFixed(1)} MiB`],
    ['end: in use / waiting / in flight / ready', `${r.end.inUse} / ${r.end.waiting} / ${r.end.inFlight} / ${r.end.ready}`],
    ['violations', String(r.violations.length)],
  ];
  const width = Math.max(...rows.map(([k]) => k.length));
  return [...rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`), ...r.violations.slice(0, 50).map((v) => `VIOLATION ${v}`)].join('\n');
}

function parseArgs(argv: string[]): { seconds: number; seed?: number; json: boolean } {
  let seconds = 60;
  let seed: number | undefined;
  let json = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = (): number => {
      const v = Number(argv[++i]);
      if (!Number.isInteger(v) || v < 0) throw new Error(`${a} needs a non-negative integer`);
      return v;
    };
    if (a === '--seconds') seconds = value();
    else if (a === '--seed') seed = value();
    else if (a === '--json') json = true;
    else if (a === '--help' || a === '-h') {
      console.log('usage: npm run soak -- [--seconds N (default 60)] [--seed N] [--json]');
      process.exit(0);
    } else throw new Error(`unknown argument ${a}`);
  }
  if (seconds < 5) throw new Error('--seconds must be at least 5');
  return { seconds, seed, json };
}

if (require.main === module) {
  let args: ReturnType<typeof parseArgs>;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (err) {
    console.error(`soak: ${(err as Error).message}`);
    process.exit(2);
  }
  runSoak({ seconds: args.seconds, seed: args.seed }).then((report) => {
    console.log(args.json ? JSON.stringify(report, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v), 2) : formatReport(report));
    if (report.violations.length) fs.writeSync(2, `soak: ${report.violations.length} violations\n`);
    process.exit(report.violations.length ? 1 : 0);
  }, (err: unknown) => {
    console.error(`soak: ${(err as Error).stack ?? String(err)}`);
    process.exit(1);
  });
}
