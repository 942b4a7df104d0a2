// Many handshakes at once through one process and one bridge.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as tls from 'node:tls';

import { nodeHandshake, startBridge, startServer, testPki } from './support/keyless-kit';

const HANDSHAKES = 200;

test(`${HANDSHAKES} concurrent handshakes through one process complete`, async () => {
  const pki = testPki();
  const bridge = await startBridge({ ec256: { keyFile: pki.leaves.ec256.keyFile }, rsa2048: { keyFile: pki.leaves.rsa2048.keyFile } });
  const server = await startServer({
    'ec256.test': tls.createSecureContext({ key: bridge.keyPem('ec256', pki.leaves.ec256.spki), cert: pki.leaves.ec256.certPem }),
    'rsa2048.test': tls.createSecureContext({ key: bridge.keyPem('rsa2048', pki.leaves.rsa2048.spki), cert: pki.leaves.rsa2048.certPem }),
  });
  try {
    const started = Date.now();
    const results = await Promise.all(Array.from({ length: HANDSHAKES }, (_, i) =>
      nodeHandshake(pki, server.port, i % 2 === 0 ? 'ec256.test' : 'rsa2048.test', i % 3 === 0 ? { maxVersion: 'TLSv1.2' } : {})));
    const failed = results.filter((result) => result.error !== undefined || !result.authorized);
    assert.deepEqual(failed.map((result) => result.error?.message), []);
    assert.deepEqual(server.clientErrors, []);
    const text = await bridge.metrics.registry.metrics();
    const count = (key: string): number => Number(new RegExp(`hsmgw_keyless_remote_signs_total\\{key="${key}"\\} (\\d+)`).exec(text)?.[1] ?? 0);
    assert.equal(count('ec256') + count('rsa2048'), HANDSHAKES);
    console.log(`# ${HANDSHAKES} keyless handshakes in ${Date.now() - started} ms (test signer spawns openssl per signature)`);
  } finally {
    await server.close();
    await bridge.close();
  }
});
