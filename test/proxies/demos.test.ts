// The two demos as a new user runs them: a fresh state directory, the gateway on non-default
// ports (HSMGW_LISTEN / HSMGW_METRICS_LISTEN), HTTPS answered with the token's certificate, and
// SIGTERM stops everything the demo started.
import { strict as assert } from 'node:assert';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as https from 'node:https';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import type * as tls from 'node:tls';
import { after, before, describe, test } from 'node:test';

import { freePort } from '../support/free-port';
import { REPO_ROOT } from '../support/test-environment';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
}

function get(port: number, ca: Buffer): Promise<{ status: number; body: string; peerCertificate: string }> {
  return new Promise((resolve, reject) => {
    const req = https.get({ host: '127.0.0.1', port, servername: 'localhost', ca, path: '/', agent: false }, (res) => {
      const peerCertificate = String((res.socket as tls.TLSSocket).getPeerCertificate().subject?.CN ?? '');
      let body = '';
      res.on('data', (c: Buffer) => { body += c.toString(); });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, peerCertificate }));
    });
    req.once('error', reject);
    req.setTimeout(10_000, () => req.destroy(new Error('timeout')));
  });
}

interface Demo {
  child: ChildProcess;
  output(): string;
  ports: { grpc: number; metrics: number; https: number; agentMetrics: number };
}

async function startDemo(script: string, stateDir: string, extraArgs: string[] = []): Promise<Demo> {
  const ports = { grpc: await freePort(), metrics: await freePort(), https: await freePort(), agentMetrics: await freePort() };
  const child = spawn(process.execPath, [path.join(REPO_ROOT, 'dist', 'examples', script), ...extraArgs], {
    env: {
      ...process.env, HSMGW_STATE_DIR: stateDir, HSMGW_CONFIG: '',
      HSMGW_LISTEN: `127.0.0.1:${ports.grpc}`, HSMGW_METRICS_LISTEN: `127.0.0.1:${ports.metrics}`,
      HSMGW_NGINX_LISTEN: `127.0.0.1:${ports.https}`, HSMGW_AGENT_METRICS_LISTEN: `127.0.0.1:${ports.agentMetrics}`, DEMO_PORT: String(ports.https),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout?.on('data', (b: Buffer) => { out += b.toString(); });
  child.stderr?.on('data', (b: Buffer) => { out += b.toString(); });
  for (let i = 0; i < 600 && !/Ctrl-C stops/.test(out); i++) {
    if (child.exitCode !== null) throw new Error(`${script} exited: ${out}`);
    await sleep(100);
  }
  assert.match(out, /Ctrl-C stops/, out);
  return { child, output: () => out, ports };
}

async function stopDemo(demo: Demo): Promise<number | null> {
  if (demo.child.exitCode !== null) return demo.child.exitCode;
  const exited = new Promise<number | null>((resolve) => demo.child.once('exit', (code) => resolve(code)));
  demo.child.kill('SIGTERM');
  return exited;
}

/** Every port the demo opened is closed again within 10 s: nothing it started outlives it. */
async function assertAllStopped(ports: number[]): Promise<void> {
  let open: number[] = ports;
  for (let i = 0; i < 100 && open.length > 0; i++) {
    const states = await Promise.all(ports.map(portOpen));
    open = ports.filter((_, k) => states[k]);
    if (open.length > 0) await sleep(100);
  }
  assert.deepEqual(open, [], `still listening after the demo stopped: ${open.join(', ')}`);
}

describe('npm run nginx-demo', { timeout: 120_000 }, () => {
  let stateDir: string;
  let demo: Demo;

  before(async () => {
    stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'hsmgw-nginx-demo-'));
    demo = await startDemo('nginx-demo.js', stateDir, ['--key', 'dev-rsa']);
  });
  after(async () => {
    if (demo) await stopDemo(demo);
    fs.rmSync(stateDir, { recursive: true, force: true });
  });

  test('starts the gateway on HSMGW_LISTEN, nginx on HSMGW_NGINX_LISTEN with files under $HSMGW_STATE_DIR/nginx, and answers HTTPS with the token certificate', async () => {
    assert.ok(await portOpen(demo.ports.grpc), 'the gateway listens on HSMGW_LISTEN');
    const metrics = await (await fetch(`http://127.0.0.1:${demo.ports.metrics}/metrics`)).text();
    assert.match(metrics, /^hsmgw_/m, 'the gateway serves metrics on HSMGW_METRICS_LISTEN');
    const crt = path.join(stateDir, 'nginx', 'dev-rsa.crt');
    assert.ok(fs.existsSync(path.join(stateDir, 'nginx', 'nginx.conf')), 'nginx.conf under $HSMGW_STATE_DIR/nginx');
    const res = await get(demo.ports.https, fs.readFileSync(crt));
    assert.equal(res.status, 200);
    assert.match(res.body, /keyless key/);
    assert.equal(res.peerCertificate, 'dev-rsa.localhost');
    assert.match(demo.output(), new RegExp(`curl --cacert ${crt.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} .*https://localhost:${demo.ports.https}/`));
    const agent = await (await fetch(`http://127.0.0.1:${demo.ports.agentMetrics}/metrics`)).text();
    assert.match(agent, /^hsmgw_agent_sign_requests_total\{result="OK"\} [1-9]/m, 'the handshake was signed through the agent');
  });

  test('SIGTERM stops nginx, the agent and the gateway it started', async () => {
    assert.equal(await stopDemo(demo), 0);
    await assertAllStopped([demo.ports.grpc, demo.ports.metrics, demo.ports.https, demo.ports.agentMetrics]);
  });
});

describe('npm run demo', { timeout: 120_000 }, () => {
  let stateDir: string;
  let demo: Demo;

  before(async () => {
    stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'hsmgw-demo-'));
    demo = await startDemo('keyless-https-demo.js', stateDir);
  });
  after(async () => {
    if (demo) await stopDemo(demo);
    fs.rmSync(stateDir, { recursive: true, force: true });
  });

  test('honours HSMGW_LISTEN and HSMGW_METRICS_LISTEN and serves keyless HTTPS with the token certificate', async () => {
    const res = await get(demo.ports.https, fs.readFileSync(path.join(stateDir, 'dev-ec-chain.pem')));
    assert.equal(res.status, 200);
    assert.equal(res.peerCertificate, 'dev-ec.localhost');
    assert.ok(await portOpen(demo.ports.grpc), 'the gateway listens on HSMGW_LISTEN');
    assert.ok(await portOpen(demo.ports.metrics), 'the gateway serves HTTP on HSMGW_METRICS_LISTEN');
  });

  test('SIGTERM stops the demo and the gateway it started', async () => {
    assert.equal(await stopDemo(demo), 0);
    await assertAllStopped([demo.ports.grpc, demo.ports.metrics, demo.ports.https]);
  });
});
