/**
 * `hsm-gateway ticket-keys` files with the real servers: two nginx instances including the
 * written ssl_session_ticket_key lines resume each other's sessions and one with its own keys
 * does not (TLS 1.3 and 1.2); the same with HAProxy's tls-ticket-keys file; the file bytes are
 * the gateway's keys in each server's layout; --watch rewrites them at a rotation and reloads
 * nginx through --notify-pidfile.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { GatewayClient } from '../../client/gateway-client';
import type { TicketKeySetView } from '../../client/ticket-keys/ticket-key-stream';
import { freePort } from '../support/free-port';
import { startGatewayProcess, type GatewayProcess } from '../support/gateway-process';
import { REPO_ROOT, IDENTITIES } from '../support/test-environment';
import { ALL_TEST_KEYS } from '../support/test-gateway';
import { sClient, tempDir } from './support/ticket-kit';
import { run } from '../proxies/support/proxy-kit';

const CLI = path.join(REPO_ROOT, 'bin', 'hsm-gateway.js');
const RULES = [{ identity: IDENTITIES.dev, keys: ALL_TEST_KEYS, ticketKeyScopes: ['web'] }];
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function clientFlags(gw: GatewayProcess): string[] {
  const { env } = gw;
  return ['--endpoint', gw.endpoint, '--ca', env.pki.ca, '--cert', env.pki.clients.dev.cert, '--key-file', env.pki.clients.dev.key];
}

async function ticketKeysCli(gw: GatewayProcess, args: string[]): Promise<{ code: number | null; output: string }> {
  const r = await run(process.execPath, [CLI, 'ticket-keys', ...args, ...clientFlags(gw)]);
  return { code: r.code, output: r.output };
}

/** The scope's set and the key that encrypts now. */
async function currentKeys(gw: GatewayProcess, scope: string): Promise<{ set: TicketKeySetView; current: TicketKeySetView['keys'][number] }> {
  const set = await keySet(gw, scope);
  const now = Date.now() / 1000;
  const current = set.keys.find((k) => k.notBefore <= now && now < k.encryptUntil);
  assert.ok(current, 'a key for now');
  return { set, current };
}

async function keySet(gw: GatewayProcess, scope: string): Promise<TicketKeySetView> {
  const client = new GatewayClient(gw.clientOptions());
  const stream = client.watchTicketKeys(scope, { update: () => undefined, refused: () => undefined });
  try {
    return await stream.first();
  } finally {
    stream.close();
    await client.close();
  }
}

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
}

interface Server { port: number; pidFile: string; stop(): Promise<void> }

async function startProcess(command: string, args: string[], port: number, pidFile: string): Promise<Server> {
  const child: ChildProcess = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout?.on('data', (b: Buffer) => { out += b.toString(); });
  child.stderr?.on('data', (b: Buffer) => { out += b.toString(); });
  for (let i = 0; !(await listening(port)); i++) {
    if (child.exitCode !== null || i > 200) throw new Error(`${command} did not start: ${out}`);
    await sleep(50);
  }
  return {
    port, pidFile,
    stop: () => new Promise((resolve) => {
      if (child.exitCode !== null) return resolve();
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      child.once('exit', () => { clearTimeout(timer); resolve(); });
      child.kill('SIGTERM');
    }),
  };
}

/** nginx in the foreground on loopback, its prefix in `dir`; `ticketKeys`: a snippet to include. */
async function startNginx(dir: string, cert: { crt: string; key: string }, ticketKeys?: string): Promise<Server> {
  const port = await freePort();
  fs.mkdirSync(path.join(dir, 'logs'), { recursive: true });
  const temp = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((t) => `${t}_temp_path ${dir};`).join(' ');
  const conf = path.join(dir, 'nginx.conf');
  const pidFile = path.join(dir, 'nginx.pid');
  fs.writeFileSync(conf, `worker_processes 1;
daemon off;
error_log ${dir}/logs/error.log info;
pid ${pidFile};
events { worker_connections 64; }
http {
  access_log off;
  ${temp}
  server {
    listen 127.0.0.1:${port} ssl;
    server_name localhost;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_certificate ${cert.crt};
    ssl_certificate_key ${cert.key};
    ${ticketKeys ? `include ${ticketKeys};` : ''}
    location / { return 200 "nginx\\n"; }
  }
}
`);
  return startProcess('nginx', ['-p', dir, '-c', conf], port, pidFile);
}

async function startHaproxy(dir: string, pem: string, ticketKeys?: string): Promise<Server> {
  const port = await freePort();
  fs.mkdirSync(dir, { recursive: true });
  const conf = path.join(dir, 'haproxy.cfg');
  fs.writeFileSync(conf, `global
  nbthread 1
defaults
  mode http
  timeout connect 5s
  timeout client 20s
  timeout server 20s
frontend tls
  bind 127.0.0.1:${port} ssl crt ${pem}${ticketKeys ? ` tls-ticket-keys ${ticketKeys}` : ''}
  http-request return status 200 content-type text/plain string "haproxy"
`);
  return startProcess('haproxy', ['-f', conf, '-db'], port, path.join(dir, 'haproxy.pid'));
}

async function selfSignedPem(dir: string): Promise<{ crt: string; key: string; pem: string }> {
  const crt = path.join(dir, 'server.crt');
  const key = path.join(dir, 'server.key');
  const r = await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', crt,
    '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost', '-days', '2']);
  assert.equal(r.code, 0, r.output);
  const pem = path.join(dir, 'server.pem');
  fs.writeFileSync(pem, fs.readFileSync(crt, 'utf8') + fs.readFileSync(key, 'utf8'));
  return { crt, key, pem };
}

async function resumesAcross(first: Server, second: Server, control: Server, caFile: string, dir: string): Promise<void> {
  for (const protocol of ['-tls1_3', '-tls1_2'] as const) {
    const session = path.join(dir, `session${protocol}.pem`);
    assert.equal((await sClient(first.port, caFile, protocol, { out: session })).kind, 'New');
    const resumed = await sClient(second.port, caFile, protocol, { in: session });
    assert.equal(resumed.kind, 'Reused', `${protocol} on the second server\n${resumed.output}`);
    const control1 = await sClient(control.port, caFile, protocol, { in: session });
    assert.equal(control1.kind, 'New', `${protocol} on the server with its own keys\n${control1.output}`);
  }
}

describe('ticket-keys files with real nginx and HAProxy', () => {
  let gw: GatewayProcess;
  const dir = tempDir('hsmgw-ticket-files-');
  let cert: { crt: string; key: string; pem: string };
  const servers: Server[] = [];

  before(async () => {
    gw = await startGatewayProcess({ ticketKeys: { root: 'ticket-root' }, authorization: { rules: RULES } });
    cert = await selfSignedPem(dir);
  });
  after(async () => {
    await Promise.all(servers.map((s) => s.stop()));
    await gw?.stop();
  });

  /** Two servers with the written keys and one with its own: sessions resume between the first two only. */
  async function checkFleet(name: string, start: (serverDir: string, shared: boolean) => Promise<Server>): Promise<void> {
    const [a, b, own] = await Promise.all([start(tempDir(`hsmgw-${name}-a-`), true), start(tempDir(`hsmgw-${name}-b-`), true), start(tempDir(`hsmgw-${name}-own-`), false)]);
    servers.push(a, b, own);
    await resumesAcross(a, b, own, cert.crt, dir);
  }

  test('nginx format: 80-byte files (name | HMAC | AES), current first in the snippet', async () => {
    const out = path.join(dir, 'nginx-keys');
    const r = await ticketKeysCli(gw, ['--scope', 'web', '--format', 'nginx', '--out', out]);
    assert.equal(r.code, 0, r.output);
    const { set, current } = await currentKeys(gw, 'web');
    const expect = (name: string, epoch: number): void => {
      const k = set.keys.find((x) => x.epoch === epoch);
      assert.ok(k, `epoch ${epoch}`);
      assert.deepEqual(fs.readFileSync(path.join(out, name)), Buffer.concat([k.name, k.hmacKey, k.aesKey]), name);
      assert.equal(fs.statSync(path.join(out, name)).mode & 0o777, 0o600);
    };
    expect('current.key', current.epoch);
    expect('next.key', current.epoch + 1);
    expect('previous-1.key', current.epoch - 1);
    expect('previous-2.key', current.epoch - 2);
    const snippet = fs.readFileSync(path.join(out, 'ticket-keys.conf'), 'utf8').split('\n').filter((l) => l.startsWith('ssl_session_ticket_key'));
    assert.deepEqual(snippet, ['current.key', 'previous-1.key', 'previous-2.key', 'next.key'].map((f) => `ssl_session_ticket_key ${out}/${f};`));
  });

  test('nginx: two instances with the files resume each other\'s sessions; one with its own keys does not', async () => {
    const snippet = path.join(dir, 'nginx-keys', 'ticket-keys.conf');
    await checkFleet('nginx', (serverDir, shared) => startNginx(serverDir, cert, shared ? snippet : undefined));
  });

  test('haproxy format: previous, current, next as base64 lines (name | AES | HMAC); two HAProxy resume each other\'s sessions', async () => {
    const out = path.join(dir, 'haproxy-keys');
    const r = await ticketKeysCli(gw, ['--scope', 'web', '--format', 'haproxy', '--out', out]);
    assert.equal(r.code, 0, r.output);
    const { set, current } = await currentKeys(gw, 'web');
    const lines = fs.readFileSync(path.join(out, 'tls-ticket-keys'), 'utf8').trim().split('\n');
    const expected = [current.epoch - 1, current.epoch, current.epoch + 1].map((e) => {
      const k = set.keys.find((x) => x.epoch === e);
      assert.ok(k);
      return Buffer.concat([k.name, k.aesKey, k.hmacKey]).toString('base64');
    });
    assert.deepEqual(lines, expected);
    const file = path.join(out, 'tls-ticket-keys');
    await checkFleet('haproxy', (serverDir, shared) => startHaproxy(serverDir, cert.pem, shared ? file : undefined));
  });

  test('an ungranted scope: exit code 3 and nothing written', async () => {
    const out = path.join(dir, 'refused');
    const r = await ticketKeysCli(gw, ['--scope', 'api', '--format', 'nginx', '--out', out]);
    assert.equal(r.code, 3, r.output);
    assert.match(r.output, /PERMISSION_DENIED/);
    assert.equal(fs.existsSync(path.join(out, 'current.key')), false);
  });
});

describe('ticket-keys --watch with nginx (3 s epochs)', () => {
  const EPOCH = 3;
  let gw: GatewayProcess;
  const dir = tempDir('hsmgw-ticket-watch-');
  const stops: Array<() => Promise<void>> = [];

  before(async () => {
    gw = await startGatewayProcess({ ticketKeys: { root: 'ticket-root', epochSeconds: EPOCH, decryptEpochs: 1 }, authorization: { rules: RULES } });
  });
  after(async () => {
    for (const stop of stops) await stop();
    await gw?.stop();
  });

  test('each nginx follows the rotation through its watcher; the previous epoch\'s ticket resumes on the other', async () => {
    const cert = await selfSignedPem(dir);
    const instances = await Promise.all(['a', 'b'].map(async (name) => {
      const keys = path.join(dir, `${name}-keys`);
      assert.equal((await ticketKeysCli(gw, ['--scope', 'web', '--format', 'nginx', '--out', keys])).code, 0);
      const nginx = await startNginx(tempDir(`hsmgw-nginx-watch-${name}-`), cert, path.join(keys, 'ticket-keys.conf'));
      stops.push(() => nginx.stop());
      const watcher = spawn(process.execPath, [CLI, 'ticket-keys', '--scope', 'web', '--format', 'nginx', '--out', keys, '--watch', '--notify-pidfile', nginx.pidFile, ...clientFlags(gw)], { stdio: 'ignore' });
      stops.unshift(() => new Promise((resolve) => { watcher.once('exit', () => resolve()); watcher.kill('SIGTERM'); }));
      return { nginx, keys };
    }));
    // nginx logs each SIGHUP it acts on; the watchers' first writes reload both once.
    const reloads = (server: Server): number => (fs.readFileSync(path.join(path.dirname(server.pidFile), 'logs', 'error.log'), 'utf8').match(/reconfiguring/g) ?? []).length;
    const until = async (what: string, check: () => boolean): Promise<void> => {
      for (const end = Date.now() + 2500; !check(); await sleep(50)) if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    };
    await until('the watchers\' first reloads', () => instances.every((i) => reloads(i.nginx) >= 1));
    const untilNext = (): number => (EPOCH - ((Date.now() / 1000) % EPOCH)) * 1000;
    await sleep(untilNext() + 300);
    const epoch = Math.floor(Date.now() / 1000 / EPOCH);
    const [a, b] = instances;
    const before = { key: fs.readFileSync(path.join(b.keys, 'current.key')), reloads: reloads(b.nginx) };
    const session = path.join(dir, 'watch.pem');
    const issued = await sClient(a.nginx.port, cert.crt, '-tls1_3', { out: session });
    assert.equal(issued.kind, 'New', issued.output);
    await sleep(untilNext() + 100);
    await until('the rotation written for b', () => !fs.readFileSync(path.join(b.keys, 'current.key')).equals(before.key));
    await until('b reloaded', () => reloads(b.nginx) > before.reloads);
    assert.equal(Math.floor(Date.now() / 1000 / EPOCH), epoch + 1, 'still the next epoch');
    const resumed = await sClient(b.nginx.port, cert.crt, '-tls1_3', { in: session });
    assert.equal(resumed.kind, 'Reused', resumed.output);
  });
});
