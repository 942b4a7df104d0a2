// Abuse of the default (non-blocking) mode: thousands of clients aborting mid-signature,
// timeouts in bulk, many keys at once, signers failing under load, and (blocking path)
// signer workers dying. No crash, no hang, no paused job left behind, and no memory growth
// beyond a stock-server control run.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as tls from 'node:tls';

import { loadKeylessAddon, type NonBlockingStats } from '../../client/keyless/keyless-addon';
import { KeylessBridge } from '../../client/keyless/keyless-bridge';
import { type NodeHandshake, type Pki, type TestServer, nodeHandshake, startServer, testPki } from './support/keyless-kit';

const ABORTS = 2000;
// Allowance over the stock run: the signer worker's own heap (it still signs the
// abandoned requests; this process's gc() does not reach its isolate) and OpenSSL's
// pool of ASYNC jobs (one 32 KiB stack per concurrently paused handshake). Measured
// here: about +10 MB, flat from 2000 to 4000 aborts. A job or stack leaked per abort
// would exceed it several times over.
const RSS_SLACK_MB = 24;
const CHILD = path.join(__dirname, 'support', 'nonblocking-abuse-child.js');
const SIGNER = path.join(__dirname, 'support', 'pss-signer.js');

interface AbuseRun {
  mode: string;
  ms: number;
  growthMb: number;
  finalHandshakeOk: boolean;
  stats: NonBlockingStats;
}

function abuse(mode: 'stock' | 'nonblocking'): Promise<AbuseRun> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['--expose-gc', CHILD, mode, String(ABORTS)], { timeout: 60_000, encoding: 'utf8' }, (error, stdout, stderr) => {
      if (error !== null) reject(new Error(`${mode} abuse run failed: ${error.message}\n${stdout}\n${stderr}`));
      else resolve(JSON.parse(stdout.trim().split('\n').pop() ?? '{}') as AbuseRun);
    });
  });
}

function stats(): NonBlockingStats {
  return loadKeylessAddon().nonBlockingStats();
}

/** A handshake that must settle (succeed or fail) within `ms`. */
function boundedHandshake(pki: Pki, port: number, name: string, ms = 5000): Promise<NodeHandshake> {
  return Promise.race([
    nodeHandshake(pki, port, name, { checkServerIdentity: () => undefined }),
    new Promise<never>((_resolve, reject) => setTimeout(() => reject(new Error(`handshake did not settle within ${ms} ms`)), ms).unref()),
  ]);
}

test(`${ABORTS} clients aborting mid-signature: no crash, no paused job left, RSS within a stock control run`, async () => {
  testPki();
  const stock = await abuse('stock');
  const nonBlocking = await abuse('nonblocking');
  console.log(`# RSS growth after ${ABORTS} aborts: stock ${stock.growthMb.toFixed(1)} MB, non-blocking ${nonBlocking.growthMb.toFixed(1)} MB; ` +
    `jobs cancelled mid-signature ${nonBlocking.stats.cancelled}`);
  assert.equal(stock.finalHandshakeOk, true);
  assert.equal(nonBlocking.finalHandshakeOk, true);
  // The aborts landed while the job was paused, and every paused job was unwound.
  assert.ok(nonBlocking.stats.cancelled >= ABORTS * 0.9, JSON.stringify(nonBlocking.stats));
  assert.equal(nonBlocking.stats.pausedNow, 0);
  assert.equal(nonBlocking.stats.orphaned, 0);
  assert.ok(nonBlocking.growthMb <= Math.max(stock.growthMb, 0) + RSS_SLACK_MB,
    `non-blocking grew ${nonBlocking.growthMb.toFixed(1)} MB, stock ${stock.growthMb.toFixed(1)} MB`);
});

describe('default-mode timeouts and signer failures under load; worker restarts on the blocking path', () => {
  let pki: Pki;
  let bridge: KeylessBridge;
  let blockingBridge: KeylessBridge;
  let server: TestServer;

  before(async () => {
    pki = testPki();
    const signerOptions = { keyFile: pki.leaves.rsa2048.keyFile, delayMs: 10 };
    bridge = await KeylessBridge.start({ signerModule: SIGNER, signerOptions, signTimeoutMs: 150 });
    assert.equal(bridge.mode, 'non-blocking');
    blockingBridge = await KeylessBridge.start({ signerModule: SIGNER, signerOptions, signTimeoutMs: 1000, mode: 'blocking' });
    const contexts: Record<string, tls.SecureContext> = {};
    const context = (owner: KeylessBridge, key: string): tls.SecureContext => tls.createSecureContext({ key: owner.keyPem(key, pki.leaves.rsa2048.spki), cert: pki.leaves.rsa2048.certPem });
    for (const name of ['rsa2048', 'hang', 'throw']) contexts[`${name}.test`] = context(bridge, name);
    contexts['blocking.test'] = context(blockingBridge, 'rsa2048');
    contexts['exit.test'] = context(blockingBridge, 'exit');
    server = await startServer(contexts);
  });

  after(async () => {
    await server?.close();
    await bridge?.close();
    await blockingBridge?.close();
  });

  test('100 handshakes whose signer hangs all time out together, not one after another', async () => {
    const before = stats();
    const errorsBefore = server.clientErrors.length;
    const started = Date.now();
    const results = await Promise.all(Array.from({ length: 100 }, () => boundedHandshake(pki, server.port, 'hang.test')));
    const elapsed = Date.now() - started;
    assert.equal(results.filter((result) => result.error === undefined).length, 0);
    assert.ok(elapsed < 3000, `took ${elapsed} ms (blocking would take 100 x 150 ms)`);
    for (let i = 0; i < 50 && server.clientErrors.length - errorsBefore < 100; i++) await new Promise((resolve) => setTimeout(resolve, 10));
    const errors = server.clientErrors.slice(errorsBefore);
    assert.equal(errors.filter((error) => /keyless: sign timed out after 150 ms \(key 'hang'\)/.test(error)).length, 100, errors.slice(0, 3).join('\n'));
    const after = stats();
    assert.equal(after.timeouts - before.timeouts, 100);
    assert.equal(after.pausedNow, 0);
    assert.equal((await boundedHandshake(pki, server.port, 'rsa2048.test')).error, undefined);
  });

  test('a signer throwing under load: every handshake settles, the others succeed, none stays paused', async () => {
    const before = stats();
    const results = await Promise.all([
      ...Array.from({ length: 40 }, () => boundedHandshake(pki, server.port, 'rsa2048.test')),
      ...Array.from({ length: 20 }, () => boundedHandshake(pki, server.port, 'throw.test')),
    ]);
    assert.deepEqual(results.slice(0, 40).map((result) => result.error?.message), Array(40).fill(undefined));
    assert.equal(results.slice(40).filter((result) => result.error === undefined).length, 0);
    const after = stats();
    assert.equal(after.pausedNow, 0);
    assert.ok(after.resumed - before.resumed >= 60, `resumed ${after.resumed - before.resumed}`);
    const text = await bridge.metrics.registry.metrics();
    assert.match(text, /hsmgw_keyless_sign_failures_total\{key="throw",reason="signer_error"\} 20/);
  });

  test('blocking path: a signer worker dying under load: every handshake settles, the worker restarts', async () => {
    for (let round = 0; round < 3; round++) {
      await blockingBridge.whenSignerRunning();
      const results = await Promise.all([
        ...Array.from({ length: 20 }, () => boundedHandshake(pki, server.port, 'blocking.test')),
        ...Array.from({ length: 20 }, () => boundedHandshake(pki, server.port, 'rsa2048.test')),
        boundedHandshake(pki, server.port, 'exit.test'),
      ]);
      assert.notEqual(results[40]?.error, undefined, 'the handshake whose signature kills the worker fails');
      assert.deepEqual(results.slice(20, 40).map((result) => result.error?.message), Array(20).fill(undefined), 'the non-blocking handshakes do not depend on the worker');
    }
    await blockingBridge.whenSignerRunning();
    assert.equal((await boundedHandshake(pki, server.port, 'blocking.test')).error, undefined);
    assert.equal(stats().pausedNow, 0);
    const text = await blockingBridge.metrics.registry.metrics();
    assert.match(text, /hsmgw_keyless_signer_worker_exits_total\{reason="exit"\} 3/);
    assert.match(text, /hsmgw_keyless_sign_failures_total\{key="exit",reason="worker_dead"\} 3/);
  });
});

describe('many keys at once in the default mode', () => {
  const KEYS = 64;

  test(`${KEYS} keyless keys behind SNI, 4 handshakes each at once, a quarter of the clients aborting mid-signature: all settle, none stays paused`, async () => {
    const pki = testPki();
    const bridge = await KeylessBridge.start({ signerModule: SIGNER, signerOptions: { keyFile: pki.leaves.rsa2048.keyFile, delayMs: 20 } });
    const contexts: Record<string, tls.SecureContext> = {};
    for (let k = 0; k < KEYS; k++) {
      contexts[`key${k}.test`] = tls.createSecureContext({ key: bridge.keyPem(`key${k}`, pki.leaves.rsa2048.spki), cert: pki.leaves.rsa2048.certPem });
    }
    const server = await startServer(contexts);
    const before = stats();
    try {
      const attempts = Array.from({ length: KEYS * 4 }, (_, i) => {
        const servername = `key${i % KEYS}.test`;
        if (i % 4 !== 3) return boundedHandshake(pki, server.port, servername);
        // Abort once the ClientHello is out: the server's job pauses, then its connection goes.
        return new Promise<NodeHandshake>((resolve) => {
          const socket = tls.connect({ host: '127.0.0.1', port: server.port, servername, ca: pki.caPem, checkServerIdentity: () => undefined });
          socket.once('error', () => undefined);
          setTimeout(() => { socket.destroy(); resolve({ authorized: false, protocol: null, error: new Error('aborted') }); }, 10);
        });
      });
      const results = await Promise.all(attempts);
      const completed = results.filter((_, i) => i % 4 !== 3);
      assert.deepEqual(completed.map((result) => result.error?.message), Array(completed.length).fill(undefined));
      for (let i = 0; i < 100 && stats().pausedNow > 0; i++) await new Promise((resolve) => setTimeout(resolve, 20));
      const after = stats();
      assert.equal(after.pausedNow, 0);
      assert.ok(after.asyncSigns - before.asyncSigns >= completed.length, `async signatures ${after.asyncSigns - before.asyncSigns}`);
      assert.equal(after.orphaned, before.orphaned);
    } finally {
      await server.close();
      await bridge.close();
    }
  });
});
