// HAProxy 2.6 (Debian's) with ssl-mode-async and keyless keys: the standalone provider pauses
// the handshake's OpenSSL ASYNC job on its connection to the agent instead of blocking the
// thread. With one thread and a signer slowed by a delaying forwarder between the agent and the
// gateway, concurrent handshakes overlap and plain requests keep being answered meanwhile.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { after, before, describe, test } from 'node:test';

import { freePort } from '../support/free-port';
import { startGatewayProcess, type GatewayProcess } from '../support/gateway-process';
import { LatencyForwarder } from '../support/latency-forwarder';
import {
  PROVIDER, keylessPem, nodeHandshake, run, sClient, scratchDir, startAgent, startHaproxy, writeOpensslConf,
  type AgentProcess, type KeylessFiles, type ServerProcess,
} from './support/proxy-kit';

const SIGNER_DELAY_MS = 400;
const CONCURRENT = 8;

describe('HAProxy with ssl-mode-async and keyless keys', { skip: fs.existsSync(PROVIDER) ? false : `${PROVIDER} is missing (npm run build:provider)` }, () => {
  let dir: string;
  let gateway: GatewayProcess;
  let forwarder: LatencyForwarder;
  let agent: AgentProcess;
  let haproxy: ServerProcess;
  let files: Record<'ec' | 'rsa', KeylessFiles>;
  const ports = { ec: 0, rsa: 0, plain: 0 };

  before(async () => {
    dir = scratchDir('haproxy');
    gateway = await startGatewayProcess();
    files = { ec: await keylessPem(gateway, 'dev-ec', dir), rsa: await keylessPem(gateway, 'dev-rsa', dir) };
    forwarder = await LatencyForwarder.start({ host: '127.0.0.1', port: gateway.grpcPort });
    agent = await startAgent(dir, [`localhost:${forwarder.port}`], gateway, { metricsPort: await freePort() });
    ports.ec = await freePort();
    ports.rsa = await freePort();
    ports.plain = await freePort();
    haproxy = await startHaproxy(dir, writeOpensslConf(dir, agent.socket, 5000), [{ port: ports.ec, pem: files.ec.pem }, { port: ports.rsa, pem: files.rsa.pem }], ports.plain);
  });

  after(async () => {
    await haproxy?.stop();
    await agent?.stop();
    await forwarder?.close();
    await gateway?.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  test('openssl s_client -verify_return_error, TLS 1.3 and 1.2, EC and RSA', async () => {
    for (const kind of ['ec', 'rsa'] as const) {
      for (const version of ['-tls1_3', '-tls1_2']) {
        const r = await sClient(ports[kind], 'localhost', files[kind].crt, [version]);
        assert.equal(r.code, 0, `${kind} ${version}: ${r.output}`);
        assert.match(r.output, /Verification: OK/);
      }
    }
    const c = await run('curl', ['-sS', '--cacert', files.ec.crt, '--resolve', `localhost:${ports.ec}:127.0.0.1`, `https://localhost:${ports.ec}/`]);
    assert.equal(c.code, 0, c.output);
    assert.match(c.output, /keyless haproxy/);
  });

  test(`with a signer slowed by ${SIGNER_DELAY_MS} ms, ${CONCURRENT} handshakes overlap on one thread and plain requests keep flowing`, async () => {
    forwarder.delayMs = SIGNER_DELAY_MS;
    try {
      const ca = fs.readFileSync(files.ec.crt);
      const started = Date.now();
      const handshakes = Promise.all(Array.from({ length: CONCURRENT }, () => nodeHandshake(ports.ec, 'localhost', ca, 20_000)));
      // While the signatures are in flight, the thread answers plain HTTP at once.
      await new Promise((resolve) => setTimeout(resolve, 100));
      const plainStarted = Date.now();
      const plain = await run('curl', ['-sS', `http://127.0.0.1:${ports.plain}/`]);
      const plainMs = Date.now() - plainStarted;
      const results = await handshakes;
      const elapsed = Date.now() - started;
      assert.deepEqual(results.filter((r) => r !== undefined), []);
      assert.match(plain.output, /plain haproxy/);
      assert.ok(plainMs < SIGNER_DELAY_MS / 2, `a plain request took ${plainMs} ms while signatures were in flight`);
      // Blocking would take CONCURRENT x the delay; paused jobs take about one delay.
      assert.ok(elapsed < SIGNER_DELAY_MS * 3, `${CONCURRENT} handshakes took ${elapsed} ms (blocking: ≥ ${CONCURRENT * SIGNER_DELAY_MS} ms)`);
    } finally {
      forwarder.delayMs = 0;
    }
  });

  test('after the slow phase, handshakes still work (no fd left behind or reused under HAProxy)', async () => {
    const ca = fs.readFileSync(files.ec.crt);
    const rsa = fs.readFileSync(files.rsa.crt);
    const results = await Promise.all(Array.from({ length: 40 }, (_, i) => nodeHandshake(i % 2 ? ports.ec : ports.rsa, 'localhost', i % 2 ? ca : rsa)));
    assert.deepEqual(results.filter((r) => r !== undefined), []);
    assert.equal(haproxy.child.exitCode, null, haproxy.output());
  });
});
