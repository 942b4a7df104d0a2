// nginx (Debian's, 2 workers) with keyless keys: the standalone provider decodes the keyless
// PEM named by ssl_certificate_key and signs through `hsm-gateway agent`, which signs through
// the gateway and its SoftHSM2 token. Checked with real clients; the agent killed, restarted
// and failed over; nginx reloaded; a peer the agent does not admit is refused.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { freePort } from '../support/free-port';
import { startGatewayProcess, type GatewayProcess } from '../support/gateway-process';
import {
  PROVIDER, keylessPem, nodeHandshake, run, sClient, scratchDir, startAgent, startNginx, writeOpensslConf,
  type AgentProcess, type KeylessFiles, type ServerProcess,
} from './support/proxy-kit';

const CHROMIUM = '/usr/bin/chromium';
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describe('nginx with keyless keys', { skip: fs.existsSync(PROVIDER) ? false : `${PROVIDER} is missing (npm run build:provider)` }, () => {
  let dir: string;
  let gateway: GatewayProcess;
  let second: GatewayProcess;
  let agent: AgentProcess;
  let nginx: ServerProcess & { prefix: string; conf: string };
  let files: Record<'ec' | 'rsa', KeylessFiles>;
  const ports = { ec: 0, rsa: 0, metrics: 0 };

  before(async () => {
    dir = scratchDir('nginx');
    [gateway, second] = await Promise.all([startGatewayProcess(), startGatewayProcess()]);
    files = { ec: await keylessPem(gateway, 'dev-ec', dir), rsa: await keylessPem(gateway, 'dev-rsa', dir) };
    ports.ec = await freePort();
    ports.rsa = await freePort();
    ports.metrics = await freePort();
    agent = await startAgent(dir, [gateway.endpoint, second.endpoint], gateway, { metricsPort: ports.metrics });
    const conf = writeOpensslConf(dir, agent.socket);
    nginx = await startNginx(dir, conf, [
      { port: ports.ec, serverName: 'localhost', files: files.ec },
      { port: ports.rsa, serverName: 'localhost', files: files.rsa },
    ]);
  });

  after(async () => {
    await nginx?.stop();
    await agent?.stop();
    await gateway?.stop();
    await second?.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  for (const [kind, expected] of [['ec', 'ECDSA'], ['rsa', 'RSA-PSS']] as const) {
    test(`${kind}: openssl s_client -verify_return_error, TLS 1.3 and 1.2, and curl`, async () => {
      for (const version of ['-tls1_3', '-tls1_2']) {
        const r = await sClient(ports[kind], 'localhost', files[kind].crt, [version]);
        assert.equal(r.code, 0, r.output);
        assert.match(r.output, /Verification: OK/);
        assert.match(r.output, version === '-tls1_3' || kind === 'ec' ? new RegExp(`Signature type: ${expected}`) : /Signature type: RSA/);
      }
      const c = await run('curl', ['-sS', '--cacert', files[kind].crt, '--resolve', `localhost:${ports[kind]}:127.0.0.1`, `https://localhost:${ports[kind]}/`]);
      assert.equal(c.code, 0, c.output);
      assert.match(c.output, /keyless nginx localhost/);
    });
  }

  test('the served certificate carries the HSM key, and no private key exists anywhere in nginx\'s files', async () => {
    for (const kind of ['ec', 'rsa'] as const) {
      const r = await run('openssl', ['s_client', '-connect', `127.0.0.1:${ports[kind]}`, '-servername', 'localhost', '-showcerts'], { input: '' });
      const served = new X509Certificate(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(r.output)?.[0] ?? '');
      const spki = served.publicKey.export({ type: 'spki', format: 'der' });
      assert.ok(spki.equals((await gateway.client().getKey(kind === 'ec' ? 'dev-ec' : 'dev-rsa')).publicKey), `${kind}: the HSM key`);
    }
    const configured = fs.readFileSync(nginx.conf, 'utf8').match(/ssl_certificate_key (\S+);/g) ?? [];
    assert.equal(configured.length, 2);
    for (const file of [dir, nginx.prefix].flatMap((d) => fs.readdirSync(d).map((f) => path.join(d, f))).filter((f) => fs.statSync(f).isFile())) {
      assert.doesNotMatch(fs.readFileSync(file, 'latin1'), /PRIVATE KEY-----/, `${file} holds a private key`);
    }
    assert.match(fs.readFileSync(files.ec.key, 'utf8'), /^-----BEGIN HSM GATEWAY KEYLESS KEY-----/);
  });

  test('Chromium loads the page (EC and RSA)', { skip: fs.existsSync(CHROMIUM) ? false : 'chromium is not installed' }, async () => {
    for (const kind of ['ec', 'rsa'] as const) {
      const userDir = fs.mkdtempSync(path.join(dir, 'chromium-'));
      const spki = new X509Certificate(fs.readFileSync(files[kind].crt)).publicKey.export({ type: 'spki', format: 'der' });
      const hash = (await import('node:crypto')).createHash('sha256').update(spki).digest('base64');
      const r = await run(CHROMIUM, ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync', `--user-data-dir=${userDir}`, `--ignore-certificate-errors-spki-list=${hash}`, '--dump-dom', `https://localhost:${ports[kind]}/`], { timeoutMs: 45_000 });
      assert.match(r.output, /keyless nginx localhost/, `${kind}: ${r.output.slice(0, 500)}`);
    }
  });

  test('100 concurrent handshakes complete', async () => {
    const ca = fs.readFileSync(files.ec.crt);
    const results = await Promise.all(Array.from({ length: 100 }, (_, i) => nodeHandshake(i % 2 ? ports.ec : ports.rsa, 'localhost', i % 2 ? ca : fs.readFileSync(files.rsa.crt))));
    assert.deepEqual(results.filter((r) => r !== undefined), []);
  });

  test('nginx -s reload keeps serving keyless keys', async () => {
    const before = await nginx.pids();
    const r = await run('nginx', ['-p', nginx.prefix, '-c', nginx.conf, '-s', 'reload'], { env: { OPENSSL_CONF: path.join(dir, 'openssl.cnf') } });
    assert.equal(r.code, 0, r.output);
    for (let i = 0; i < 50 && (await nginx.pids()).some((pid, n) => n > 0 && before.includes(pid)); i++) await sleep(100);
    const after = await nginx.pids();
    assert.ok(after.slice(1).every((pid) => !before.includes(pid)), 'new workers');
    assert.equal(await nodeHandshake(ports.ec, 'localhost', fs.readFileSync(files.ec.crt)), undefined);
  });

  test('agent killed: handshakes fail fast and nginx stays up; agent restarted: they recover without a reload', async () => {
    await agent.stop('SIGKILL');
    const started = Date.now();
    const failed = await nodeHandshake(ports.ec, 'localhost', fs.readFileSync(files.ec.crt));
    assert.notEqual(failed, undefined);
    assert.ok(Date.now() - started < 1000, `failed after ${Date.now() - started} ms`);
    assert.equal(nginx.child.exitCode, null, 'nginx is still running');
    for (let i = 0; i < 20 && !/cannot reach the agent/.test(fs.readFileSync(path.join(nginx.prefix, 'logs', 'error.log'), 'utf8')); i++) await sleep(50);
    assert.match(fs.readFileSync(path.join(nginx.prefix, 'logs', 'error.log'), 'utf8'), /keyless: cannot reach the agent at .*agent\.sock/);
    agent = await startAgent(dir, [gateway.endpoint, second.endpoint], gateway, { metricsPort: ports.metrics });
    assert.equal(await nodeHandshake(ports.ec, 'localhost', fs.readFileSync(files.ec.crt)), undefined);
    assert.equal(await nodeHandshake(ports.rsa, 'localhost', fs.readFileSync(files.rsa.crt)), undefined);
  });

  test('a gateway stopped behind the agent: handshakes fail over to the other one', async () => {
    const ca = fs.readFileSync(files.ec.crt);
    assert.equal(await gateway.terminate(), 0);
    const results = [];
    for (let i = 0; i < 10; i++) results.push(await nodeHandshake(ports.ec, 'localhost', ca));
    assert.deepEqual(results.filter((r) => r !== undefined), []);
    await gateway.restart();
  });

  test('a peer whose uid and gid the agent does not admit is refused, before any signature', async () => {
    const metrics = async (): Promise<number> => Number(/^hsmgw_agent_peers_refused_total (\d+)/m.exec(await (await fetch(agent.metricsUrl)).text())?.[1] ?? NaN);
    const before = await metrics();
    // uid 1 (daemon) in the socket's group: the file mode lets it connect, SO_PEERCRED does not.
    const probe = `const s=require('net').connect(${JSON.stringify(agent.socket)});const b=Buffer.from([0,0,0,0x1a,1,1,0,0,0,1,7,0,6,...Buffer.from('dev-ec'),0,0,0,0x20,...Buffer.alloc(32)]);s.on('connect',()=>s.write(b));let got=0;s.on('data',(d)=>{got+=d.length});s.on('close',()=>{console.log('answered '+got);process.exit(0)});s.on('error',(e)=>{console.log('error '+e.code);process.exit(0)});`;
    const output = await new Promise<string>((resolve) => {
      const child = spawn(process.execPath, ['-e', probe], { uid: 1, gid: fs.statSync(agent.socket).gid, stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      child.stdout.on('data', (b: Buffer) => { out += b.toString(); });
      child.on('close', () => resolve(out.trim()));
    });
    // Closed at once: the probe sees its write fail, or an empty answer; never a signature.
    assert.match(output, /^(answered 0|error (EPIPE|ECONNRESET))$/);
    assert.equal(await metrics(), before + 1);
    assert.match(agent.output(), /peer refused \(uid and gid not allowed\)","pid":\d+,"uid":1/);
  });
});
