// Real nginx and HAProxy (Debian packages) with the standalone keyless provider, the real
// agent (`hsm-gateway agent`) and the real gateway: each started as its own process in a
// scratch directory, with the keyless PEMs written by `hsm-gateway keyless-pem`.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tls from 'node:tls';

import { PROVIDER_MODULE, providerOpensslConf } from '../../../client/agent/provider-config';
import { REPO_ROOT } from '../../support/test-environment';

/** What the kit needs of a gateway: its address and a CA and client identity for it (the tests', the lifecycle tests' and the bench's gateways all fit). */
export interface GatewayEndpoint {
  endpoint: string;
  env: { pki: { ca: string; clients: { dev: { cert: string; key: string } } } };
}

export const PROVIDER = PROVIDER_MODULE;
const CLI = path.join(REPO_ROOT, 'bin', 'hsm-gateway.js');
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export interface CommandResult {
  code: number | null;
  output: string;
}

export function run(command: string, args: string[], options: { env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number } = {}): Promise<CommandResult> {
  return new Promise((resolve) => {
    const child = execFile(command, args, { env: { ...process.env, ...options.env }, timeout: options.timeoutMs ?? 20_000, encoding: 'utf8' }, (error, stdout, stderr) => {
      resolve({ code: error === null ? 0 : child.exitCode ?? 1, output: `${stdout}${stderr}` });
    });
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(options.input ?? '');
  });
}

/** A scratch directory the servers' unprivileged workers (nobody) can read. */
export function scratchDir(prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `hsmgw-${prefix}-`));
  fs.chmodSync(dir, 0o755);
  return dir;
}

export interface KeylessFiles {
  key: string;
  crt: string;
  pem: string;
}

/** `hsm-gateway keyless-pem --key NAME --out DIR` against the gateway; the files are made world-readable for the workers. */
export async function keylessPem(gateway: GatewayEndpoint, name: string, dir: string): Promise<KeylessFiles> {
  const pki = gateway.env.pki;
  const r = await run(process.execPath, [CLI, 'keyless-pem', '--key', name, '--out', dir, '--endpoint', gateway.endpoint,
    '--ca', pki.ca, '--cert', pki.clients.dev.cert, '--key-file', pki.clients.dev.key]);
  if (r.code !== 0) throw new Error(`keyless-pem ${name} failed: ${r.output}`);
  const files = { key: path.join(dir, `${name}.key`), crt: path.join(dir, `${name}.crt`), pem: path.join(dir, `${name}.pem`) };
  for (const file of Object.values(files)) fs.chmodSync(file, 0o644);
  return files;
}

/** openssl.cnf activating the default provider and the keyless provider, talking to `socket`. */
export function writeOpensslConf(dir: string, socket: string, timeoutMs = 2000): string {
  const file = path.join(dir, 'openssl.cnf');
  fs.writeFileSync(file, providerOpensslConf({ agentSocket: socket, signTimeoutMs: timeoutMs }));
  return file;
}

export interface AgentProcess {
  socket: string;
  metricsUrl: string;
  child: ChildProcess;
  output(): string;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/** `hsm-gateway agent` on a socket in `dir`, its group nogroup, admitting `allowUids`. */
export async function startAgent(dir: string, endpoints: string[], gateway: GatewayEndpoint, options: { allowUids?: string; metricsPort: number; socketName?: string }): Promise<AgentProcess> {
  const socket = path.join(dir, options.socketName ?? 'agent.sock');
  const pki = gateway.env.pki;
  const args = [CLI, 'agent', '--socket', socket, '--socket-group', 'nogroup', '--allow-uid', options.allowUids ?? 'nobody,root',
    '--metrics-listen', `127.0.0.1:${options.metricsPort}`, '--ca', pki.ca, '--cert', pki.clients.dev.cert, '--key-file', pki.clients.dev.key,
    ...endpoints.flatMap((e) => ['--endpoint', e])];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout?.on('data', (b: Buffer) => { out += b.toString(); });
  child.stderr?.on('data', (b: Buffer) => { out += b.toString(); });
  for (let i = 0; i < 200 && !out.includes('"agent listening"'); i++) {
    if (child.exitCode !== null) throw new Error(`agent exited: ${out}`);
    await sleep(50);
  }
  if (!out.includes('"agent listening"')) throw new Error(`agent did not start: ${out}`);
  return {
    socket, child, metricsUrl: `http://127.0.0.1:${options.metricsPort}/metrics`, output: () => out,
    stop: (signal = 'SIGTERM') => new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      child.once('exit', () => resolve());
      child.kill(signal);
    }),
  };
}

export interface ServerProcess {
  child: ChildProcess;
  output(): string;
  /** Pids of the server's processes (master and workers). */
  pids(): Promise<number[]>;
  stop(): Promise<void>;
}

function startServer(command: string, args: string[], opensslConf: string, ready: () => Promise<boolean>): Promise<ServerProcess> {
  const child = spawn(command, args, { env: { ...process.env, OPENSSL_CONF: opensslConf }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout?.on('data', (b: Buffer) => { out += b.toString(); });
  child.stderr?.on('data', (b: Buffer) => { out += b.toString(); });
  const server: ServerProcess = {
    child, output: () => out,
    pids: async () => {
      const r = await run('pgrep', ['-P', String(child.pid)]);
      return [child.pid ?? -1, ...r.output.split('\n').filter((l) => /^\d+$/.test(l)).map(Number)];
    },
    stop: () => new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      child.once('exit', () => { clearTimeout(timer); resolve(); });
      child.kill('SIGTERM');
    }),
  };
  return (async () => {
    for (let i = 0; i < 200; i++) {
      if (child.exitCode !== null) throw new Error(`${command} exited: ${out}`);
      if (await ready()) return server;
      await sleep(50);
    }
    throw new Error(`${command} did not start listening: ${out}`);
  })();
}

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
}

export interface NginxSite {
  port: number;
  serverName: string;
  files: KeylessFiles;
}

export interface NginxOptions {
  /** Extra main-context directives (e.g. `user root root;`, `env SOFTHSM2_CONF;`). */
  mainDirectives?: string[];
  /** A plain-HTTP stub_status server on this port (`/status`), for counting accepted connections. */
  statusPort?: number;
}

/** nginx in the foreground with its prefix in `dir`, 2 workers, one HTTPS server per site. */
export async function startNginx(dir: string, opensslConf: string, sites: NginxSite[], options: NginxOptions = {}): Promise<ServerProcess & { prefix: string; conf: string }> {
  const prefix = path.join(dir, 'nginx');
  fs.mkdirSync(path.join(prefix, 'logs'), { recursive: true });
  fs.mkdirSync(path.join(prefix, 'tmp'), { recursive: true });
  const temp = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((t) => `${t}_temp_path ${prefix}/tmp;`).join(' ');
  const servers = sites.map((s) => `
    server {
      listen 127.0.0.1:${s.port} ssl;
      server_name ${s.serverName};
      ssl_protocols TLSv1.2 TLSv1.3;
      ssl_certificate ${s.files.crt};
      ssl_certificate_key ${s.files.key};
      location / { return 200 "keyless nginx ${s.serverName}\\n"; }
    }`).join('\n');
  const status = options.statusPort === undefined ? '' : `server { listen 127.0.0.1:${options.statusPort}; location = /status { stub_status; } }`;
  const conf = path.join(prefix, 'nginx.conf');
  fs.writeFileSync(conf, `worker_processes 2;
daemon off;
error_log ${prefix}/logs/error.log info;
pid ${prefix}/nginx.pid;
env OPENSSL_CONF;
${(options.mainDirectives ?? []).join('\n')}
events { worker_connections 512; }
http {
  access_log off;
  ${temp}
  ${servers}
  ${status}
}
`);
  const server = await startServer('nginx', ['-p', prefix, '-c', conf], opensslConf, () => listening(sites[0].port));
  return { ...server, prefix, conf };
}

/** HAProxy in the foreground (ssl-mode-async, one thread): a TLS frontend per certificate and a plain one. */
export async function startHaproxy(dir: string, opensslConf: string, frontends: Array<{ port: number; pem: string }>, plainPort: number): Promise<ServerProcess> {
  const conf = path.join(dir, 'haproxy.cfg');
  const tls = frontends.map((f, i) => `frontend tls${i}
  bind 127.0.0.1:${f.port} ssl crt ${f.pem}
  http-request return status 200 content-type text/plain string "keyless haproxy"
`).join('');
  fs.writeFileSync(conf, `global
  ssl-mode-async
  nbthread 1
defaults
  mode http
  timeout connect 5s
  timeout client 20s
  timeout server 20s
${tls}frontend plain
  bind 127.0.0.1:${plainPort}
  http-request return status 200 content-type text/plain string "plain haproxy"
`);
  return startServer('haproxy', ['-f', conf, '-db'], opensslConf, () => listening(frontends[0].port));
}

/** openssl s_client with -verify_return_error against a server; its -brief report. */
export function sClient(port: number, serverName: string, caFile: string, extra: string[]): Promise<CommandResult> {
  return run('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-servername', serverName, '-verify_return_error', '-CAfile', caFile, '-brief', ...extra]);
}

/** A Node TLS handshake: undefined, or the error message. */
export function nodeHandshake(port: number, serverName: string, ca: Buffer, timeoutMs = 10_000): Promise<string | undefined> {
  return new Promise((resolve) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername: serverName, ca }, () => {
      socket.end();
      resolve(socket.authorized ? undefined : String(socket.authorizationError));
    });
    socket.once('error', (error) => resolve(error.message));
    socket.setTimeout(timeoutMs, () => { socket.destroy(); resolve('timeout'); });
  });
}
