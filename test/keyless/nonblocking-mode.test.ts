// Non-blocking mode (the default): the event loop runs while signatures are in flight,
// the signatures are made by the signer on the event loop's thread (none by the worker),
// those of one loop turn are dispatched together, the hooks Node would run JavaScript
// from are safe (SNICallback, 'OCSPRequest', 'keylog') or refused (ALPNCallback,
// pskCallback), everything else falls back to blocking, and the self-check falls back
// with one warning line ('auto') or refuses to start ('non-blocking').
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as tls from 'node:tls';

import { resolveClientOptions } from '../../client/gateway-client-options';
import { loadKeylessAddon, type NonBlockingStats } from '../../client/keyless/keyless-addon';
import { KeylessBridge, type RemoteSigner } from '../../client/keyless/keyless-bridge';
import { createRemoteSigner } from '../fixtures/keyless/test-signer';
import { type Pki, type TestServer, TEST_SIGNER, nodeHandshake, sClient, startServer, tempFile, takeLog, testPki } from './support/keyless-kit';

const DELAY_MS = 150;
const CONCURRENT = 12;
const FALLBACK_CHILD = path.join(__dirname, 'support', 'nonblocking-fallback-child.js');
const CLIENTS_CHILD = path.join(__dirname, 'support', 'tls-clients-child.js');
const HANDSHAKES_IN_ONE_TURN = 20;

/** Full handshakes from another process, all started at once: 'ok' or the error, each. */
function runClients(port: number, count: number): Promise<string[]> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [CLIENTS_CHILD, String(port), String(count), 'ec256.test'], { timeout: 30_000, encoding: 'utf8' }, (error, stdout, stderr) => {
      if (error !== null) reject(new Error(`${error.message}\n${stderr}`));
      else resolve(JSON.parse(stdout) as string[]);
    });
  });
}

function stats(): NonBlockingStats {
  return loadKeylessAddon().nonBlockingStats();
}

/** Runs `work` while measuring the longest gap between 5 ms timer ticks (event-loop stalls). */
async function longestStall<T>(work: () => Promise<T>): Promise<{ result: T; stallMs: number }> {
  let last = performance.now();
  let stallMs = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    stallMs = Math.max(stallMs, now - last);
    last = now;
  }, 5);
  try {
    const result = await work();
    return { result, stallMs };
  } finally {
    clearInterval(timer);
  }
}

/** A TLS server (no SNI) answering "ok" with one secure context. */
async function plainServer(options: tls.TlsOptions, setup: (server: tls.Server) => void = () => undefined): Promise<{ server: tls.Server; port: number; errors: string[] }> {
  const errors: string[] = [];
  const server = tls.createServer(options, (socket) => socket.end('ok\n'));
  server.on('tlsClientError', (error) => errors.push(error.message));
  setup(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as AddressInfo).port, errors };
}

function closeServer(server: tls.Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

describe('keyless non-blocking mode', () => {
  let pki: Pki;
  let nonBlocking: KeylessBridge;
  let blocking: KeylessBridge;
  let log: string;

  before(async () => {
    pki = testPki();
    log = tempFile('keyless-nb-log');
    const keys = {
      ec256: { keyFile: pki.leaves.ec256.keyFile },
      rsa2048: { keyFile: pki.leaves.rsa2048.keyFile },
      slow: { keyFile: pki.leaves.ec256.keyFile, delayMs: DELAY_MS },
      client: { keyFile: pki.leaves.client.keyFile },
    };
    nonBlocking = await KeylessBridge.start({ signerModule: TEST_SIGNER, signerOptions: { keys, logFile: log } });
    blocking = await KeylessBridge.start({ signerModule: TEST_SIGNER, signerOptions: { keys }, mode: 'blocking' });
  });

  after(async () => {
    await nonBlocking?.close();
    await blocking?.close();
  });

  function credentials(bridge: KeylessBridge, key: 'ec256' | 'rsa2048' | 'slow'): { key: string; cert: string } {
    const leaf = key === 'rsa2048' ? pki.leaves.rsa2048 : pki.leaves.ec256;
    return { key: bridge.keyPem(key, leaf.spki), cert: leaf.certPem };
  }

  function context(bridge: KeylessBridge, key: 'ec256' | 'rsa2048' | 'slow', extra: tls.SecureContextOptions = {}): tls.SecureContext {
    return tls.createSecureContext({ ...credentials(bridge, key), ...extra });
  }

  test('nonBlockingStats() reports, as numbers, every counter the metrics, the self-check and the bench read', () => {
    const current = stats();
    // The names are declared once, natively (HSMGW_NONBLOCKING_COUNTERS); these are the readers'.
    for (const name of ['paused', 'resumed', 'cancelled', 'pausedNow', 'asyncSigns', 'blockingSigns', 'dispatches', 'deferredEvents', 'armed', 'asyncConnections', 'notKeyless', 'timeouts']) {
      assert.equal(typeof current[name], 'number', name);
    }
    assert.equal(Object.keys(current).length, 14);
  });

  test("the self-check passed: the default mode ('auto') is non-blocking, mode 'blocking' is blocking", () => {
    assert.equal(nonBlocking.nonBlocking, true);
    assert.equal(nonBlocking.mode, 'non-blocking');
    assert.equal(blocking.nonBlocking, false);
    assert.equal(blocking.mode, 'blocking');
  });

  test('options are validated with errors naming the option; the deprecated boolean maps to a mode', async () => {
    await assert.rejects(KeylessBridge.start({ signerModule: TEST_SIGNER, nonBlocking: 'yes' as unknown as boolean }), /option nonBlocking must be a boolean/);
    await assert.rejects(KeylessBridge.start({ signerModule: TEST_SIGNER, mode: 'async' as unknown as 'auto' }), /option mode must be one of 'auto', 'non-blocking', 'blocking'/);
    await assert.rejects(KeylessBridge.start({ signerModule: TEST_SIGNER, mode: 'blocking', nonBlocking: true }), /options mode \('blocking'\) and nonBlocking \(deprecated, true\) disagree/);
    await assert.rejects(KeylessBridge.start({ signerModule: TEST_SIGNER, signer: {} as unknown as RemoteSigner }), /option signer must be an object with sign\(\)/);
    const base = { endpoints: ['127.0.0.1:1'], ca: pki.caPem, cert: pki.leaves.client.certPem, key: pki.leaves.client.keyPem };
    assert.equal(resolveClientOptions(base).keylessMode, 'auto');
    assert.equal(resolveClientOptions({ ...base, keylessNonBlocking: true }).keylessMode, 'auto');
    assert.equal(resolveClientOptions({ ...base, keylessNonBlocking: false }).keylessMode, 'blocking');
    assert.equal(resolveClientOptions({ ...base, keylessMode: 'non-blocking' }).keylessMode, 'non-blocking');
    assert.throws(() => resolveClientOptions({ ...base, keylessNonBlocking: 1 as unknown as boolean }), /GatewayClient: option "keylessNonBlocking" must be a boolean/);
    assert.throws(() => resolveClientOptions({ ...base, keylessMode: 'fast' as unknown as 'auto' }), /GatewayClient: option "keylessMode" must be one of/);
    assert.throws(() => resolveClientOptions({ ...base, keylessMode: 'non-blocking', keylessNonBlocking: false }), /disagree; set only "keylessMode"/);
  });

  test('the signatures are made by the signer on the event loop thread, none by the worker; one loop turn is one dispatch', async () => {
    const workerLog = tempFile('keyless-nb-worker-log');
    const calls: number[] = []; // the dispatch (synchronous run) each sign() call came in
    let run = 0;
    let inRun = false;
    const keys = { ec256: { keyFile: pki.leaves.ec256.keyFile } };
    const local = createRemoteSigner({ keys });
    const signer: RemoteSigner = {
      sign(keyName, algorithm, digest) {
        if (!inRun) {
          inRun = true;
          run++;
          queueMicrotask(() => { inRun = false; });
        }
        calls.push(run);
        return local.sign(keyName, algorithm, digest);
      },
    };
    const bridge = await KeylessBridge.start({ signerModule: TEST_SIGNER, signerOptions: { keys, logFile: workerLog }, signer });
    // An SNICallback that answers all the handshakes at once, when the last one arrives: their
    // certificate callbacks finish in one turn, so their signatures are due in one turn too.
    const context = tls.createSecureContext({ key: bridge.keyPem('ec256', pki.leaves.ec256.spki), cert: pki.leaves.ec256.certPem });
    const waiting: Array<(error: Error | null, context: tls.SecureContext) => void> = [];
    const { server, port } = await plainServer({
      ...credentials(bridge, 'ec256'),
      SNICallback: (_name, callback) => {
        if (waiting.push(callback) === HANDSHAKES_IN_ONE_TURN) for (const answer of waiting.splice(0)) answer(null, context);
      },
    });
    try {
      const results = await runClients(port, HANDSHAKES_IN_ONE_TURN);
      assert.deepEqual(results, Array(HANDSHAKES_IN_ONE_TURN).fill('ok'));
    } finally {
      await closeServer(server);
      await bridge.close();
    }
    assert.equal(calls.length, HANDSHAKES_IN_ONE_TURN);
    assert.deepEqual(takeLog(workerLog), [], 'the worker signed nothing');
    const largest = Math.max(...[...new Set(calls)].map((r) => calls.filter((c) => c === r).length));
    assert.equal(largest, HANDSHAKES_IN_ONE_TURN, `dispatches: ${JSON.stringify(calls)}`);
  });

  test(`the event loop keeps running while ${CONCURRENT} signatures of ${DELAY_MS} ms are in flight (blocking control stalls)`, async () => {
    for (const [bridge, expectAsync] of [[nonBlocking, true], [blocking, false]] as const) {
      const server = await startServer({ 'slow.test': context(bridge, 'slow') });
      try {
        const started = Date.now();
        const { result, stallMs } = await longestStall(() => Promise.all(Array.from({ length: CONCURRENT }, () => nodeHandshake(pki, server.port, 'slow.test', { checkServerIdentity: () => undefined }))));
        const elapsed = Date.now() - started;
        assert.deepEqual(result.map((handshake) => handshake.error?.message), Array(CONCURRENT).fill(undefined));
        if (expectAsync) {
          assert.ok(stallMs < DELAY_MS * 2 / 3, `event loop stalled ${stallMs.toFixed(0)} ms`);
          assert.ok(elapsed < CONCURRENT * DELAY_MS / 2, `took ${elapsed} ms`);
        } else {
          // The probe can fail: the blocking bridge stops the loop for each signature.
          assert.ok(stallMs >= DELAY_MS * 0.9, `blocking control stalled only ${stallMs.toFixed(0)} ms`);
        }
      } finally {
        await server.close();
      }
    }
  });

  test('SNICallback, synchronous and asynchronous, is safe: the handshake is async', async () => {
    const contexts = { 'ec256.test': context(nonBlocking, 'ec256') };
    const before = stats();
    const sync = await startServer(contexts);
    const asyncServer = await plainServer({
      SNICallback: (name, callback) => setTimeout(() => callback(null, contexts[name as 'ec256.test']), 10),
    });
    try {
      assert.equal((await nodeHandshake(pki, sync.port, 'ec256.test')).authorized, true);
      assert.equal((await nodeHandshake(pki, asyncServer.port, 'ec256.test')).authorized, true);
    } finally {
      await sync.close();
      await closeServer(asyncServer.server);
    }
    const after = stats();
    assert.equal(after.asyncSigns - before.asyncSigns, 2);
    assert.equal(after.blockingSigns - before.blockingSigns, 0);
  });

  test("the 'OCSPRequest' event is safe: the stapled response arrives and the handshake is async", async () => {
    const before = stats();
    const staple = Buffer.from('test OCSP response');
    let requests = 0;
    const { server, port } = await plainServer(credentials(nonBlocking, 'ec256'), (s) => s.on('OCSPRequest', (_cert: Buffer, _issuer: Buffer, callback: (error: Error | null, response: Buffer) => void) => {
      requests++;
      setImmediate(() => callback(null, staple));
    }));
    try {
      const response = await new Promise<Buffer | null>((resolve, reject) => {
        let ocsp: Buffer | null = null;
        const options: tls.ConnectionOptions & { requestOCSP: boolean } = { host: '127.0.0.1', port, servername: 'ec256.test', ca: pki.caPem, requestOCSP: true };
        const socket = tls.connect(options);
        socket.on('OCSPResponse', (buffer: Buffer) => { ocsp = buffer; });
        socket.once('secureConnect', () => { socket.end(); resolve(ocsp); });
        socket.once('error', reject);
      });
      assert.equal(requests, 1);
      assert.deepEqual(response, staple);
    } finally {
      await closeServer(server);
    }
    assert.equal(stats().asyncSigns - before.asyncSigns, 1);
  });

  test("'keylog' is safe: lines written inside the job are replayed from the loop", async () => {
    const before = stats();
    const lines: string[] = [];
    const { server, port } = await plainServer(credentials(nonBlocking, 'ec256'), (s) => s.on('keylog', (line: Buffer) => lines.push(line.toString())));
    try {
      for (const maxVersion of ['TLSv1.3', 'TLSv1.2'] as const) {
        assert.equal((await nodeHandshake(pki, port, 'ec256.test', { maxVersion })).authorized, true);
      }
    } finally {
      await closeServer(server);
    }
    const labels = lines.map((line) => line.split(' ')[0]);
    for (const label of ['SERVER_HANDSHAKE_TRAFFIC_SECRET', 'CLIENT_HANDSHAKE_TRAFFIC_SECRET', 'SERVER_TRAFFIC_SECRET_0', 'CLIENT_TRAFFIC_SECRET_0', 'CLIENT_RANDOM']) {
      assert.ok(labels.includes(label), `keylog lines: ${labels.join(', ')}`);
    }
    const after = stats();
    assert.equal(after.asyncSigns - before.asyncSigns, 2);
    // TLS 1.3 derives its handshake and traffic secrets inside the job: those lines were deferred.
    assert.ok(after.deferredEvents - before.deferredEvents >= 4, `deferred ${after.deferredEvents - before.deferredEvents}`);
  });

  test('ALPNCallback and pskCallback servers are refused: they sign blocking and still work', async () => {
    const before = stats();
    const alpn = await plainServer({ ...credentials(nonBlocking, 'ec256'), ALPNCallback: ({ protocols }) => protocols[0] });
    const psk = await plainServer({ ...credentials(nonBlocking, 'ec256'), pskCallback: () => null });
    try {
      assert.equal((await nodeHandshake(pki, alpn.port, 'ec256.test', { ALPNProtocols: ['h2'] })).authorized, true);
      assert.equal((await nodeHandshake(pki, psk.port, 'ec256.test')).authorized, true);
    } finally {
      await closeServer(alpn.server);
      await closeServer(psk.server);
    }
    const after = stats();
    assert.equal(after.asyncSigns - before.asyncSigns, 0);
    assert.equal(after.blockingSigns - before.blockingSigns, 2);
    const text = await nonBlocking.metrics.registry.metrics();
    assert.match(text, /hsmgw_keyless_nonblocking_refused_connections_total\{reason="alpn_callback"\} [1-9]/);
    assert.match(text, /hsmgw_keyless_nonblocking_refused_connections_total\{reason="psk_callback"\} [1-9]/);
  });

  test('a keyless client key (mTLS upstream) signs blocking, counted as a fallback', async () => {
    const before = stats();
    const server = await startServer({ 'rsa2048.test': context(blocking, 'rsa2048', { ca: pki.caPem }) }, { requestCert: true, rejectUnauthorized: true, ca: pki.caPem });
    try {
      const leaf = pki.leaves.client;
      const handshake = await nodeHandshake(pki, server.port, 'rsa2048.test', { key: nonBlocking.keyPem('client', leaf.spki), cert: leaf.certPem });
      assert.equal(handshake.error, undefined);
      assert.equal(handshake.authorized, true);
    } finally {
      await server.close();
    }
    const after = stats();
    assert.equal(after.blockingSigns - before.blockingSigns, 1);
    assert.equal(after.notKeyless - before.notKeyless, 1, 'the server key belongs to a blocking bridge: that connection leaves async mode');
  });

  test('a blocking bridge and a PEM key in the same process are untouched', async () => {
    const before = stats();
    const server = await startServer({
      'ec256.test': context(blocking, 'ec256'),
      'ec256other.test': tls.createSecureContext({ key: pki.leaves.ec256other.keyPem, cert: pki.leaves.ec256other.certPem }),
    });
    try {
      for (const name of ['ec256.test', 'ec256other.test']) {
        const result = await sClient(pki, server.port, name, ['-tls1_3']);
        assert.ok(result.ok, result.output);
      }
    } finally {
      await server.close();
    }
    const after = stats();
    assert.equal(after.asyncSigns - before.asyncSigns, 0);
    assert.equal(after.blockingSigns - before.blockingSigns, 0);
    assert.equal(after.notKeyless - before.notKeyless, 2);
  });

  test('resumed sessions (TLS 1.3 and 1.2) need no signature', async () => {
    const server: TestServer = await startServer({ 'ec256.test': context(nonBlocking, 'ec256') });
    try {
      for (const maxVersion of ['TLSv1.3', 'TLSv1.2'] as const) {
        takeLog(log);
        const session = await new Promise<Buffer>((resolve, reject) => {
          const socket = tls.connect({ host: '127.0.0.1', port: server.port, servername: 'ec256.test', ca: pki.caPem, maxVersion });
          socket.once('session', (data: Buffer) => { resolve(data); socket.end(); });
          socket.once('error', reject);
        });
        const reused = await new Promise<boolean>((resolve, reject) => {
          const socket = tls.connect({ host: '127.0.0.1', port: server.port, servername: 'ec256.test', ca: pki.caPem, maxVersion, session });
          socket.once('secureConnect', () => { resolve(socket.isSessionReused()); socket.end(); });
          socket.once('error', reject);
        });
        assert.equal(reused, true, maxVersion);
        assert.deepEqual(takeLog(log), ['ec256 7'], `${maxVersion}: one signature for the full handshake only`);
      }
    } finally {
      await server.close();
    }
  });

  test('a HelloRetryRequest (TLS 1.3, key share for an unsupported group) completes in async mode', async () => {
    const before = stats();
    const { server, port } = await plainServer({ ...credentials(nonBlocking, 'ec256'), ecdhCurve: 'P-256' });
    try {
      const result = await sClient(pki, port, 'ec256.test', ['-tls1_3', '-groups', 'P-384:P-256', '-msg']);
      assert.ok(result.ok, result.output);
      assert.equal(result.output.match(/ClientHello/g)?.length, 2, 'the server asked for a second ClientHello');
    } finally {
      await closeServer(server);
    }
    assert.equal(stats().asyncSigns - before.asyncSigns, 1);
  });

  test('a TLS 1.2 renegotiation signs again, blocking (outside the first handshake)', async () => {
    const before = stats();
    const sockets: tls.TLSSocket[] = [];
    const { server, port } = await plainServer({ ...credentials(nonBlocking, 'ec256'), maxVersion: 'TLSv1.2' }, (s) => {
      // Keep the connection open (plainServer's handler ends it after writing): renegotiation needs it.
      s.removeAllListeners('secureConnection');
      s.on('secureConnection', (socket: tls.TLSSocket) => {
        sockets.push(socket);
        socket.on('data', () => undefined);
      });
    });
    try {
      await new Promise<void>((resolve, reject) => {
        const socket = tls.connect({ host: '127.0.0.1', port, servername: 'ec256.test', ca: pki.caPem, maxVersion: 'TLSv1.2' });
        const timer = setTimeout(() => reject(new Error('renegotiation did not finish within 5 s')), 5000);
        socket.once('error', reject);
        socket.once('secureConnect', () => {
          socket.renegotiate({ rejectUnauthorized: true }, (error) => {
            clearTimeout(timer);
            socket.end();
            if (error !== null && error !== undefined) reject(error);
            else resolve();
          });
        });
      });
    } finally {
      for (const socket of sockets) socket.destroy();
      await closeServer(server);
    }
    const after = stats();
    assert.equal(after.asyncSigns - before.asyncSigns, 1);
    assert.equal(after.blockingSigns - before.blockingSigns, 1);
  });

  test('metrics count paused and resumed jobs and signatures by mode', async () => {
    const text = await nonBlocking.metrics.registry.metrics();
    for (const name of ['hsmgw_keyless_async_jobs_paused_total', 'hsmgw_keyless_async_jobs_resumed_total']) {
      assert.match(text, new RegExp(`^${name} [1-9]`, 'm'));
    }
    assert.match(text, /^hsmgw_keyless_async_jobs_paused 0$/m);
    assert.match(text, /hsmgw_keyless_nonblocking_signatures_total\{mode="async"\} [1-9]/);
    assert.match(text, /hsmgw_keyless_nonblocking_signatures_total\{mode="blocking"\} [1-9]/);
  });
});

test("when the self-check fails, 'auto' bridges fall back to blocking with one warning line and 'non-blocking' ones refuse to start", async () => {
  testPki();
  const { code, stdout, stderr } = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = execFile(process.execPath, [FALLBACK_CHILD], { timeout: 20_000, encoding: 'utf8' }, (_error, out, err) => {
      resolve({ code: child.exitCode, stdout: out, stderr: err });
    });
  });
  assert.equal(code, 0, `${stdout}\n${stderr}`);
  const warnings = stderr.split('\n').filter((line) => line !== '');
  assert.equal(warnings.length, 1, stderr);
  assert.match(warnings[0] ?? '', /^hsm-gateway keyless: non-blocking mode unavailable, using the blocking bridge: loopback self-check failed: .*the TLSWrap handle lacks certCbDone\/enableCertCb\/newSessionDone\/destroySSL$/);
  assert.match(stdout, /nonBlocking=false handshakes=2 ok/);
  assert.match(stdout, /explicit non-blocking: keyless: mode 'non-blocking' is unavailable in this process: loopback self-check failed: /);
});
