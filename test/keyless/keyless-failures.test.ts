// When the remote signature does not come, the handshake fails at once with a
// readable error and the server keeps serving: in the default (non-blocking) mode,
// and, for the signer worker's own failures, on the blocking path.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import * as tls from 'node:tls';

import type { KeylessBridge } from '../../client/keyless/keyless-bridge';
import { type Pki, type TestServer, nodeHandshake, startBridge, startServer, testPki } from './support/keyless-kit';

const TIMEOUT_MS = 400;

describe('keyless failures', () => {
  let pki: Pki;
  let bridge: KeylessBridge;
  let blockingBridge: KeylessBridge;
  let closedBridge: KeylessBridge;
  let server: TestServer;

  before(async () => {
    pki = testPki();
    const ec = pki.leaves.ec256.keyFile;
    const rsa = pki.leaves.rsa2048.keyFile;
    bridge = await startBridge({
      good: { keyFile: ec },
      hang: { keyFile: ec, behavior: 'hang' },
      slow: { keyFile: ec, delayMs: TIMEOUT_MS + 200 },
      error: { keyFile: ec, behavior: 'error' },
      oversize: { keyFile: rsa, behavior: 'oversize' },
    }, { signTimeoutMs: TIMEOUT_MS });
    // The signer worker's failures: only the blocking path signs on the worker.
    blockingBridge = await startBridge({ exit: { keyFile: ec, behavior: 'exit-worker' }, good: { keyFile: ec } }, { signTimeoutMs: TIMEOUT_MS, mode: 'blocking' });
    closedBridge = await startBridge({ good: { keyFile: ec } });

    const contexts: Record<string, tls.SecureContext> = {};
    for (const name of ['good', 'hang', 'slow', 'error']) {
      contexts[`${name}.test`] = tls.createSecureContext({ key: bridge.keyPem(name, pki.leaves.ec256.spki), cert: pki.leaves.ec256.certPem });
    }
    contexts['exit.test'] = tls.createSecureContext({ key: blockingBridge.keyPem('exit', pki.leaves.ec256.spki), cert: pki.leaves.ec256.certPem });
    contexts['blocking-good.test'] = tls.createSecureContext({ key: blockingBridge.keyPem('good', pki.leaves.ec256.spki), cert: pki.leaves.ec256.certPem });
    contexts['oversize.test'] = tls.createSecureContext({ key: bridge.keyPem('oversize', pki.leaves.rsa2048.spki), cert: pki.leaves.rsa2048.certPem });
    contexts['closed.test'] = tls.createSecureContext({ key: closedBridge.keyPem('good', pki.leaves.ec256.spki), cert: pki.leaves.ec256.certPem });
    server = await startServer(contexts);
    await closedBridge.close();
  });

  after(async () => {
    await server?.close();
    await bridge?.close();
    await blockingBridge?.close();
  });


  /** A handshake that must fail; returns the server's error text and the time it took. */
  async function failingHandshake(name: string): Promise<{ serverError: string; ms: number }> {
    const before = server.clientErrors.length;
    const started = Date.now();
    const handshake = await nodeHandshake(pki, server.port, `${name}.test`, { checkServerIdentity: () => undefined });
    const ms = Date.now() - started;
    assert.notEqual(handshake.error, undefined, `handshake with ${name} should fail`);
    for (let i = 0; i < 50 && server.clientErrors.length === before; i++) await new Promise((resolve) => setTimeout(resolve, 10));
    return { serverError: server.clientErrors.slice(before).join('\n'), ms };
  }

  async function assertServes(name = 'good'): Promise<void> {
    const handshake = await nodeHandshake(pki, server.port, `${name}.test`, { checkServerIdentity: () => undefined });
    assert.equal(handshake.error, undefined);
    assert.equal(handshake.authorized, true);
  }

  test('a hanging signer times out after signTimeoutMs and the server keeps serving', async () => {
    const { serverError, ms } = await failingHandshake('hang');
    assert.match(serverError, /keyless: sign timed out after 400 ms \(key 'hang'\)/);
    assert.ok(ms >= TIMEOUT_MS - 10 && ms < TIMEOUT_MS + 1500, `took ${ms} ms`);
    await assertServes();
  });

  test('a late answer is dropped', async () => {
    const { serverError } = await failingHandshake('slow');
    assert.match(serverError, /sign timed out/);
    await new Promise((resolve) => setTimeout(resolve, 400)); // the answer arrives meanwhile
    await assertServes();
  });

  test('a signer error fails the handshake at once with its message', async () => {
    const { serverError, ms } = await failingHandshake('error');
    assert.match(serverError, /keyless: remote signer failed for key 'error': HSM refused: CKR_KEY_HANDLE_INVALID/);
    assert.ok(ms < TIMEOUT_MS, `took ${ms} ms`);
    await assertServes();
  });

  test('a signature of the wrong length is refused before it reaches the client', async () => {
    const { serverError } = await failingHandshake('oversize');
    assert.match(serverError, /keyless: signer returned 272 bytes for key 'oversize' \(expected 256\)/);
    await assertServes();
  });

  test('blocking path: a dying worker fails the handshake at once; the bridge restarts it', async () => {
    const { serverError, ms } = await failingHandshake('exit');
    assert.match(serverError, /keyless: signer worker stopped while signing with key 'exit'/);
    assert.ok(ms < TIMEOUT_MS, `took ${ms} ms`);
    await blockingBridge.whenSignerRunning();
    assert.equal(blockingBridge.signerRunning, true);
    await assertServes('blocking-good');
    await assertServes();
  });

  test('a key whose bridge is closed fails at once with "no signer"', async () => {
    const { serverError, ms } = await failingHandshake('closed');
    assert.match(serverError, /keyless: no signer for key 'good': its bridge is closed/);
    assert.ok(ms < TIMEOUT_MS, `took ${ms} ms`);
    await assertServes();
  });

  test('failures are counted by reason', async () => {
    const text = await bridge.metrics.registry.metrics();
    for (const [key, reason] of [['hang', 'timeout'], ['slow', 'timeout'], ['error', 'signer_error'], ['exit', 'worker_dead'], ['oversize', 'bad_signature'], ['good', 'no_signer']]) {
      assert.match(text, new RegExp(`hsmgw_keyless_sign_failures_total\\{key="${key}",reason="${reason}"\\} 1`));
    }
    assert.match(text, /hsmgw_keyless_signer_worker_exits_total\{reason="exit"\} 1/);
  });
});

describe('keyless signing from the signer thread itself', () => {
  test('fails at once instead of deadlocking', async () => {
    const pki = testPki();
    // The signer's sign() signs with a keyless key of its own bridge, on the worker thread.
    const probe = await startBridge({});
    const keylessPem = probe.keyPem('good', pki.leaves.ec256.spki);
    await probe.close();
    // Blocking: only the blocking path signs on the worker thread.
    const bridge = await startBridge({ reentrant: { keyFile: pki.leaves.ec256.keyFile, behavior: 'reentrant', keylessPem } }, { signTimeoutMs: 1500, mode: 'blocking' });
    const server = await startServer({
      'reentrant.test': tls.createSecureContext({ key: bridge.keyPem('reentrant', pki.leaves.ec256.spki), cert: pki.leaves.ec256.certPem }),
    });
    try {
      const started = Date.now();
      const handshake = await nodeHandshake(pki, server.port, 'reentrant.test', { checkServerIdentity: () => undefined });
      assert.notEqual(handshake.error, undefined);
      assert.ok(Date.now() - started < 1000, 'must not wait for the timeout');
      assert.match(server.clientErrors.join('\n'), /remote signer failed for key 'reentrant': .*keyless sign on signer thread/);
    } finally {
      await server.close();
      await bridge.close();
    }
  });
});
