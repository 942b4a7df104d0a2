/**
 * `npm run bench [-- --quick] [-- --only sign,handshake,nginx] [-- --profile]`
 *
 * Runs the benchmark sections side by side (interleaved rounds, medians and min-max), prints the
 * tables and target verdicts, and writes bench/results/bench-<time>.json and latest.json.
 */
import './support/bench-state';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { GatewayProcess } from './support/gateway-process';
import { targetLines, type Target } from './support/targets';
import { runSignBench, type SignBenchResult } from './sign/sign-bench';
import { deriveSign, localRsaSignCpuMicros, signTables, signTargets, type SignDerived } from './sign/sign-report';
import type { KeyKind } from './sign/sign-specs';
import { BENCH_TICKET_SCOPE, resumptionReport, runResumptionBench, type ResumptionBenchResult } from './resumption/resumption-bench';
import { runHandshakeBench, handshakeReport, type HandshakeBenchResult } from './handshake/handshake-bench';
import { profileGateway, type ProfileSummary } from './support/profile-gateway';
import { runNginxBench, nginxReport, type NginxBenchResult } from './nginx/nginx-bench';

interface Args {
  quick: boolean;
  only: Set<string>;
  profile: boolean;
  out: string;
}

function parseArgs(argv: string[]): Args {
  const args: Args = { quick: false, only: new Set(['sign', 'handshake', 'nginx', 'resumption']), profile: false, out: path.resolve(__dirname, '..', '..', 'bench', 'results') };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--quick') args.quick = true;
    else if (a === '--profile') args.profile = true;
    else if (a === '--only') args.only = new Set(argv[++i].split(','));
    else if (a === '--out') args.out = path.resolve(argv[++i]);
    else if (a === '--help' || a === '-h') {
      process.stdout.write('usage: npm run bench -- [--quick] [--only sign,handshake,nginx,resumption] [--profile] [--out DIR]\n');
      process.exit(0);
    } else {
      process.stderr.write(`bench: unknown argument ${a}\n`);
      process.exit(2);
    }
  }
  // Without --only, every section runs, fleet resumption included.
  if (!argv.includes('--only')) args.only.add('resumption');
  return args;
}

export interface BenchReport {
  startedAt: string;
  mode: 'quick' | 'full';
  command: string;
  machine: { nproc: number; cpuModel: string; node: string; openssl: string; kernel: string; loadAverage: number[] };
  sign?: SignBenchResult & { derived: SignDerived[]; localRsaSignCpuMicros: number };
  resumption?: ResumptionBenchResult;
  handshake?: HandshakeBenchResult;
  nginx?: NginxBenchResult;
  profile?: ProfileSummary;
  targets: Target[];
  durationSeconds: number;
}

function machine(): BenchReport['machine'] {
  const cpuinfo = fs.readFileSync('/proc/cpuinfo', 'utf8');
  return {
    nproc: os.availableParallelism(), cpuModel: /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1] ?? os.cpus()[0]?.model ?? '?',
    node: process.version, openssl: process.versions.openssl, kernel: os.release(), loadAverage: os.loadavg(),
  };
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const started = performance.now();
  const log = (line: string): void => { process.stderr.write(`${line}\n`); };
  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'hsmgw-bench-'));
  const report: BenchReport = {
    startedAt: new Date().toISOString(), mode: args.quick ? 'quick' : 'full',
    command: `npm run bench --${process.argv.slice(2).length ? ` ${process.argv.slice(2).join(' ')}` : ''}`,
    machine: machine(), targets: [], durationSeconds: 0,
  };
  const timing = args.quick ? { rounds: 1, warmupMs: 150, windowMs: 400 } : { rounds: 3, warmupMs: 500, windowMs: 2000 };
  const keys: KeyKind[] = ['ecdsa-p256', 'rsa-2048'];
  const sessions = 8; // the config default (pkcs11.sessions.max)
  const signThreads = 2; // the config default (pkcs11.signThreads)
  const sections: string[] = [];

  let gateway: GatewayProcess | undefined;
  try {
    log(`bench: starting the gateway (fixture in ${process.env.HSMGW_TEST_STATE_DIR})`);
    gateway = await GatewayProcess.start(workDir, {
      logFile: path.join(workDir, 'gateway.stderr.log'), logging: { level: 'info', audit: true },
      ticketKeys: { root: 'ticket-root' }, ticketKeyScopes: [BENCH_TICKET_SCOPE],
    });

    if (args.only.has('sign')) {
      log('bench: sign path');
      const result = await runSignBench({
        gateway, timing, keys, sessions, signThreads, concurrencies: args.quick ? [1, 64] : [1, 16, 64, 256], soakSeconds: args.quick ? 2 : 60, log,
      });
      const derived = deriveSign(result);
      const localRsa = localRsaSignCpuMicros(args.quick ? 100 : 500);
      report.sign = { ...result, derived, localRsaSignCpuMicros: localRsa };
      report.targets.push(...signTargets(result, derived, localRsa));
      sections.push(`## Sign path\n\n${signTables(result, derived)}\n- local RSA-2048 PSS sign with Node's OpenSSL: ${localRsa.toFixed(0)} µs CPU`);
    }

    if (args.only.has('resumption')) {
      log('bench: fleet resumption (shared ticket keys)');
      const result = await runResumptionBench({ gateway, quick: args.quick, log });
      report.resumption = result;
      const { text, targets } = resumptionReport(result);
      report.targets.push(...targets);
      sections.push(`## Fleet resumption\n\n${text}`);
    }

    if (args.only.has('handshake')) {
      log('bench: handshake path');
      const result = await runHandshakeBench({ gateway, workDir, quick: args.quick, log });
      report.handshake = result;
      const { text, targets } = handshakeReport(result);
      report.targets.push(...targets);
      sections.push(`## Handshake path\n\n${text}`);
    }

    if (args.only.has('nginx')) {
      log('bench: nginx (PEM key, keyless through the agent, libp11 engine)');
      const result = await runNginxBench({ gateway, workDir, quick: args.quick, log });
      report.nginx = result;
      const { text, targets } = nginxReport(result);
      report.targets.push(...targets);
      sections.push(`## nginx\n\n${text}`);
    }

    if (args.profile) {
      await gateway.stop();
      gateway = undefined;
      log('bench: profiling the gateway (--cpu-prof) under SignStream and unary load');
      report.profile = await profileGateway(workDir, args.quick ? 1000 : 5000, log);
      sections.push(`## Gateway CPU profile\n\n${report.profile.text}`);
    }
  } finally {
    await gateway?.stop();
  }

  report.durationSeconds = (performance.now() - started) / 1000;
  const m = report.machine;
  const out = [
    `# hsm-gateway bench (${report.mode}), ${report.startedAt}`,
    `machine: ${m.nproc} CPUs, ${m.cpuModel}, node ${m.node} (OpenSSL ${m.openssl}), kernel ${m.kernel}, load average at start ${m.loadAverage.map((v) => v.toFixed(2)).join(' ')}`,
    `sign-path timing: ${timing.rounds} rounds, ${timing.warmupMs} ms warm-up + ${timing.windowMs} ms measured per cell; figures are medians (min-max over rounds)`,
    '',
    ...sections.flatMap((s) => [s, '']),
    '## Targets',
    '',
    targetLines(report.targets),
    '',
    `(${report.durationSeconds.toFixed(0)} s)`,
  ].join('\n');
  process.stdout.write(`${out}\n`);
  fs.mkdirSync(args.out, { recursive: true });
  const json = JSON.stringify(report, null, 2);
  fs.writeFileSync(path.join(args.out, `bench-${report.startedAt.replace(/[:.]/g, '-')}.json`), json);
  fs.writeFileSync(path.join(args.out, 'latest.json'), json);
  fs.rmSync(workDir, { recursive: true, force: true });
}

main().catch((err) => {
  process.stderr.write(`bench: ${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
