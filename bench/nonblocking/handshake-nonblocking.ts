/**
 * `node dist/bench/nonblocking/handshake-nonblocking.js [--rounds N] [--seconds S] [--quick]`
 *
 * Full TLS 1.3 handshakes per second of ONE server process (the proxy), and its CPU per
 * handshake, for: stock (RSA-2048 PEM key), the blocking keyless bridge and the
 * non-blocking keyless mode, with 0, 1 and 5 ms of latency injected in the signer
 * path (delay-signer.js, in the bridge's worker). 64 concurrent clients in this
 * process; each server in its own child process. Rounds are interleaved (every
 * configuration once per round) and the table shows medians with min-max.
 * Writes bench/results/nonblocking-<time>.json. Self-contained: a throwaway key and
 * certificate are made with the openssl CLI.
 */
import { execFileSync, fork, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tls from 'node:tls';

import { KeylessBridge } from '../../client/keyless/keyless-bridge';

type Mode = 'stock' | 'blocking' | 'nonblocking';

interface ServerSpec {
  mode: Mode;
  latencyMs: number;
  keyFile: string;
  certFile: string;
}

type ToServer = { type: 'start' } | { type: 'stop' };
type FromServer =
  | { type: 'listening'; port: number; nonBlocking: boolean }
  | { type: 'window'; handshakes: number; cpuMicros: number; errors: number }
  | { type: 'failed'; message: string };

interface Sample {
  handshakesPerSecond: number;
  cpuMicrosPerHandshake: number;
  errors: number;
}

const CONCURRENCY = 64;
const LATENCIES = [0, 1, 5];
const WARM_UP_MS = 500;
const ROOT = path.resolve(__dirname, '..', '..', '..');

// ---- server child ---------------------------------------------------------------------

async function serve(spec: ServerSpec): Promise<void> {
  const send = (message: FromServer): void => {
    process.send?.(message);
  };
  const cert = fs.readFileSync(spec.certFile, 'utf8');
  let key = fs.readFileSync(spec.keyFile, 'utf8');
  let bridge: KeylessBridge | undefined;
  if (spec.mode !== 'stock') {
    bridge = await KeylessBridge.start({
      signerModule: path.join(__dirname, 'delay-signer.js'),
      signerOptions: { keyFile: spec.keyFile, latencyMs: spec.latencyMs },
      nonBlocking: spec.mode === 'nonblocking',
    });
    const spki = new (await import('node:crypto')).X509Certificate(cert).publicKey.export({ type: 'spki', format: 'der' });
    key = bridge.keyPem('bench', spki);
  }
  let handshakes = 0;
  let errors = 0;
  const server = tls.createServer({ key, cert, minVersion: 'TLSv1.3' }, (socket) => {
    handshakes++;
    socket.on('error', () => undefined);
    socket.end();
  });
  server.on('tlsClientError', () => errors++);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  let startCpu = process.cpuUsage();
  let startHandshakes = 0;
  let startErrors = 0;
  process.on('message', (message: ToServer) => {
    if (message.type === 'start') {
      startCpu = process.cpuUsage();
      startHandshakes = handshakes;
      startErrors = errors;
    } else {
      const cpu = process.cpuUsage(startCpu);
      send({ type: 'window', handshakes: handshakes - startHandshakes, cpuMicros: cpu.user + cpu.system, errors: errors - startErrors });
    }
  });
  process.on('disconnect', () => process.exit(0));
  send({ type: 'listening', port: (server.address() as AddressInfo).port, nonBlocking: bridge?.nonBlocking ?? false });
}

// ---- orchestrator -------------------------------------------------------------------------

interface Server {
  name: string;
  spec: ServerSpec;
  child: ChildProcess;
  port: number;
}

function startServer(spec: ServerSpec): Promise<Server> {
  return new Promise((resolve, reject) => {
    const child = fork(__filename, ['--serve', JSON.stringify(spec)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    child.once('message', (message: FromServer) => {
      if (message.type !== 'listening') {
        reject(new Error(message.type === 'failed' ? message.message : 'unexpected message'));
        return;
      }
      if (spec.mode === 'nonblocking' && !message.nonBlocking) reject(new Error('non-blocking mode unavailable in the server process'));
      const name = spec.mode === 'stock' ? 'stock' : `${spec.mode} @${spec.latencyMs} ms`;
      resolve({ name, spec, child, port: message.port });
    });
    child.once('exit', (code) => reject(new Error(`server ${spec.mode} exited (${code})`)));
  });
}

function request(server: Server, message: ToServer): Promise<Extract<FromServer, { type: 'window' }> | undefined> {
  return new Promise((resolve) => {
    if (message.type === 'start') {
      server.child.send(message);
      resolve(undefined);
      return;
    }
    server.child.once('message', (reply: FromServer) => resolve(reply.type === 'window' ? reply : undefined));
    server.child.send(message);
  });
}

/** CONCURRENCY client loops of full handshakes (no session reuse) until `until`. */
async function load(port: number, until: number): Promise<void> {
  const loop = async (): Promise<void> => {
    while (Date.now() < until) {
      await new Promise<void>((resolve) => {
        const socket = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false });
        socket.once('secureConnect', () => socket.end());
        socket.once('error', () => socket.destroy());
        socket.once('close', () => resolve());
      });
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, loop));
}

async function measure(server: Server, seconds: number): Promise<Sample> {
  const now = Date.now();
  const loading = load(server.port, now + WARM_UP_MS + seconds * 1000);
  await new Promise((resolve) => setTimeout(resolve, WARM_UP_MS));
  await request(server, { type: 'start' });
  const started = performance.now();
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
  const window = await request(server, { type: 'stop' });
  const elapsed = (performance.now() - started) / 1000;
  await loading;
  if (window === undefined) throw new Error(`${server.name}: no measurement`);
  return {
    handshakesPerSecond: window.handshakes / elapsed,
    cpuMicrosPerHandshake: window.handshakes > 0 ? window.cpuMicros / window.handshakes : Number.NaN,
    errors: window.errors,
  };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[mid] ?? Number.NaN) : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
}

function spread(values: number[], digits = 0): string {
  const f = (value: number): string => value.toFixed(digits);
  return `${f(median(values))} (${f(Math.min(...values))}-${f(Math.max(...values))})`;
}

function table(header: string[], rows: string[][]): string {
  const widths = header.map((cell, i) => Math.max(cell.length, ...rows.map((row) => (row[i] ?? '').length)));
  const line = (cells: string[]): string => `| ${cells.map((cell, i) => cell.padEnd(widths[i] ?? 0)).join(' | ')} |`;
  return [line(header), `| ${widths.map((width) => '-'.repeat(width)).join(' | ')} |`, ...rows.map(line)].join('\n');
}

function makeKey(dir: string): { keyFile: string; certFile: string } {
  const keyFile = path.join(dir, 'bench.key');
  const certFile = path.join(dir, 'bench.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', keyFile, '-out', certFile,
    '-subj', '/CN=localhost', '-days', '2'], { stdio: ['ignore', 'ignore', 'pipe'] });
  return { keyFile, certFile };
}

async function main(argv: string[]): Promise<void> {
  const quick = argv.includes('--quick');
  const option = (name: string, fallback: number): number => {
    const at = argv.indexOf(name);
    return at >= 0 ? Number(argv[at + 1]) : fallback;
  };
  const rounds = option('--rounds', quick ? 1 : 3);
  const seconds = option('--seconds', quick ? 1.5 : 3);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hsmgw-nb-bench-'));
  const { keyFile, certFile } = makeKey(dir);

  const specs: ServerSpec[] = [{ mode: 'stock', latencyMs: 0, keyFile, certFile }];
  for (const latencyMs of LATENCIES) {
    for (const mode of ['blocking', 'nonblocking'] as const) specs.push({ mode, latencyMs, keyFile, certFile });
  }
  const servers: Server[] = [];
  try {
    for (const spec of specs) servers.push(await startServer(spec));
    const samples = new Map<string, Sample[]>(servers.map((server) => [server.name, []]));
    console.log(`non-blocking keyless bench: ${rounds} interleaved rounds x ${servers.length} servers, ${seconds} s each, ` +
      `${CONCURRENCY} concurrent clients, TLS 1.3, RSA-2048, ${os.cpus().length} CPUs, node ${process.versions.node}`);
    for (let round = 0; round < rounds; round++) {
      for (const server of servers) {
        const sample = await measure(server, seconds);
        samples.get(server.name)?.push(sample);
        console.log(`  round ${round + 1} ${server.name}: ${sample.handshakesPerSecond.toFixed(0)} handshakes/s, ` +
          `${sample.cpuMicrosPerHandshake.toFixed(0)} us CPU/handshake${sample.errors > 0 ? `, ${sample.errors} errors` : ''}`);
      }
    }

    // The bridge's own cost (worker hop, and this bench's signer, which encodes PSS in
    // JavaScript) shows at 0 ms in both keyless modes; relative to blocking @0 ms what is
    // left is the cost of latency itself.
    const bridgeRate = median((samples.get('blocking @0 ms') ?? []).map((s) => s.handshakesPerSecond));
    const stock = samples.get('stock') ?? [];
    const stockRate = median(stock.map((s) => s.handshakesPerSecond));
    const stockCpu = median(stock.map((s) => s.cpuMicrosPerHandshake));
    const rows = servers.map((server) => {
      const list = samples.get(server.name) ?? [];
      const rate = list.map((s) => s.handshakesPerSecond);
      const cpu = list.map((s) => s.cpuMicrosPerHandshake);
      return [
        server.name,
        spread(rate),
        `${(median(rate) / stockRate).toFixed(2)}x`,
        server.spec.mode === 'stock' ? '-' : `${(median(rate) / bridgeRate).toFixed(2)}x`,
        spread(cpu),
        `${(median(cpu) / stockCpu).toFixed(2)}x`,
        String(list.reduce((sum, s) => sum + s.errors, 0)),
      ];
    });
    console.log('');
    console.log(table(['server (injected signer latency)', 'handshakes/s median (min-max)', 'vs stock', 'vs blocking @0 ms', 'proxy CPU us/handshake', 'vs stock', 'errors'], rows));

    const ratio = (name: string, field: keyof Sample): number => median((samples.get(name) ?? []).map((s) => s[field])) / (field === 'handshakesPerSecond' ? stockRate : stockCpu);
    const targets = [
      { target: 'non-blocking >= 0.95x stock handshakes/s at 1 ms', value: ratio('nonblocking @1 ms', 'handshakesPerSecond'), ok: ratio('nonblocking @1 ms', 'handshakesPerSecond') >= 0.95 },
      { target: 'non-blocking >= 0.9x stock handshakes/s at 5 ms', value: ratio('nonblocking @5 ms', 'handshakesPerSecond'), ok: ratio('nonblocking @5 ms', 'handshakesPerSecond') >= 0.9 },
      ...LATENCIES.map((latency) => {
        const value = ratio(`nonblocking @${latency} ms`, 'cpuMicrosPerHandshake');
        return { target: `non-blocking proxy CPU/handshake <= 1.3x stock at ${latency} ms`, value, ok: value <= 1.3 };
      }),
    ];
    console.log('');
    for (const t of targets) console.log(`${t.ok ? 'MET ' : 'MISS'} ${t.target}: ${t.value.toFixed(2)}x`);

    const out = path.join(ROOT, 'bench', 'results');
    fs.mkdirSync(out, { recursive: true });
    const file = path.join(out, `nonblocking-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
    fs.writeFileSync(file, `${JSON.stringify({
      bench: 'keyless-nonblocking-handshake',
      at: new Date().toISOString(),
      node: process.versions.node,
      openssl: process.versions.openssl,
      cpus: os.cpus().length,
      concurrency: CONCURRENCY,
      rounds,
      seconds,
      key: 'RSA-2048, TLS 1.3',
      samples: Object.fromEntries(samples),
      targets,
    }, null, 2)}\n`);
    console.log(`\nwrote ${path.relative(process.cwd(), file)}`);
  } finally {
    for (const server of servers) server.child.disconnect();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[2] === '--serve') {
  serve(JSON.parse(process.argv[3] ?? '{}') as ServerSpec).catch((error: unknown) => {
    process.send?.({ type: 'failed', message: error instanceof Error ? error.stack ?? error.message : String(error) } satisfies FromServer);
    process.exit(1);
  });
} else {
  main(process.argv.slice(2)).catch((error: unknown) => {
    console.error(error);
    process.exit(1);
  });
}
