// Real clients verify handshake signatures made by the remote signer.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as tls from 'node:tls';

import type { KeylessBridge } from '../../client/keyless/keyless-bridge';
import { freePort } from '../support/free-port';
import {
  type NodeHandshake,
  type LeafName, type Pki, type TestServer,
  nodeHandshake, run, sClient, startBridge, startServer, takeLog, tempFile, testPki,
} from './support/keyless-kit';

const SERVER_KEYS: LeafName[] = ['ec256', 'ec384', 'rsa2048', 'rsa3072', 'ed25519'];

describe('keyless TLS server', () => {
  let pki: Pki;
  let bridge: KeylessBridge;
  let server: TestServer;
  let log: string;

  before(async () => {
    pki = testPki();
    log = tempFile('keyless-log');
    const keys: Record<string, { keyFile: string }> = {};
    for (const name of SERVER_KEYS) keys[name] = { keyFile: pki.leaves[name].keyFile };
    // Answers with another key of the same type: clients must reject the signature.
    keys['ec256-wrong'] = { keyFile: pki.leaves.ec256other.keyFile };
    keys['rsa2048-wrong'] = { keyFile: pki.leaves.rsa2048other.keyFile };
    keys['ed25519-wrong'] = { keyFile: pki.leaves.ed25519other.keyFile };
    bridge = await startBridge(keys, { logFile: log });

    const contexts: Record<string, tls.SecureContext> = {};
    for (const name of SERVER_KEYS) {
      const leaf = pki.leaves[name];
      contexts[`${name}.test`] = tls.createSecureContext({ key: bridge.keyPem(name, leaf.spki), cert: leaf.certPem });
    }
    contexts['ec256wrong.test'] = tls.createSecureContext({ key: bridge.keyPem('ec256-wrong', pki.leaves.ec256.spki), cert: pki.leaves.ec256.certPem });
    contexts['rsa2048wrong.test'] = tls.createSecureContext({ key: bridge.keyPem('rsa2048-wrong', pki.leaves.rsa2048.spki), cert: pki.leaves.rsa2048.certPem });
    contexts['ed25519wrong.test'] = tls.createSecureContext({ key: bridge.keyPem('ed25519-wrong', pki.leaves.ed25519.spki), cert: pki.leaves.ed25519.certPem });
    // An ordinary PEM key in the same process and server.
    contexts['ec256other.test'] = tls.createSecureContext({ key: pki.leaves.ec256other.keyPem, cert: pki.leaves.ec256other.certPem });
    server = await startServer(contexts);
  });

  after(async () => {
    await server?.close();
    await bridge?.close();
  });

  // [server name, s_client options, signature type printed by s_client, algorithm the signer saw]
  const cases: Array<[LeafName, string[], string, number]> = [
    ['ec256', ['-tls1_3'], 'ECDSA', 7],
    ['ec256', ['-tls1_2', '-cipher', 'ECDHE-ECDSA-AES128-GCM-SHA256'], 'ECDSA', 7],
    ['ec256', ['-tls1_2', '-sigalgs', 'ECDSA+SHA512'], 'ECDSA', 9],
    ['ec384', ['-tls1_3'], 'ECDSA', 8],
    ['ec384', ['-tls1_2', '-sigalgs', 'ECDSA+SHA384'], 'ECDSA', 8],
    ['rsa2048', ['-tls1_3'], 'RSA-PSS', 4],
    ['rsa2048', ['-tls1_3', '-sigalgs', 'rsa_pss_rsae_sha384'], 'RSA-PSS', 5],
    ['rsa3072', ['-tls1_3', '-sigalgs', 'rsa_pss_rsae_sha512'], 'RSA-PSS', 6],
    ['rsa2048', ['-tls1_2', '-cipher', 'ECDHE-RSA-AES128-GCM-SHA256'], 'RSA-PSS', 4],
    ['rsa2048', ['-tls1_2', '-sigalgs', 'RSA+SHA256'], 'RSA', 1],
    ['rsa3072', ['-tls1_2', '-sigalgs', 'RSA+SHA384'], 'RSA', 2],
    ['rsa3072', ['-tls1_2', '-sigalgs', 'RSA+SHA512'], 'RSA', 3],
    // Pure EdDSA: the signer gets the whole signed content, not a digest.
    ['ed25519', ['-tls1_3'], 'ed25519', 10],
    ['ed25519', ['-tls1_2', '-cipher', 'ECDHE-ECDSA-AES128-GCM-SHA256'], 'ed25519', 10],
  ];
  for (const [name, options, signatureType, algorithm] of cases) {
    test(`openssl s_client ${name} ${options.join(' ')} verifies a ${signatureType} signature (algorithm ${algorithm})`, async () => {
      takeLog(log);
      const result = await sClient(pki, server.port, `${name}.test`, options);
      assert.ok(result.ok, result.output);
      assert.match(result.output, /Verification: OK/);
      assert.match(result.output, new RegExp(`Signature type: ${signatureType}\\n`));
      assert.deepEqual(takeLog(log), [`${name} ${algorithm}`]);
    });
  }

  test('curl verifies the server (RSA and Ed25519)', async () => {
    for (const name of ['rsa2048', 'ed25519']) {
      const url = `https://${name}.test:${server.port}/`;
      const result = await run('curl', ['-sS', '--cacert', pki.caFile, '--resolve', `${name}.test:${server.port}:127.0.0.1`, url]);
      assert.ok(result.ok, result.output);
      assert.match(result.output, /keyless ok/);
    }
  });

  test('node tls.connect verifies the server', async () => {
    for (const name of SERVER_KEYS) {
      const handshake = await nodeHandshake(pki, server.port, `${name}.test`);
      assert.equal(handshake.error, undefined);
      assert.equal(handshake.authorized, true);
    }
  });

  test('an ordinary PEM key in the same process still works', async () => {
    takeLog(log);
    const result = await sClient(pki, server.port, 'ec256other.test', ['-tls1_3']);
    assert.ok(result.ok, result.output);
    assert.deepEqual(takeLog(log), []);
  });

  test('a signer answering with another key makes clients fail with a bad signature', async () => {
    for (const [name, options] of [['ec256wrong.test', ['-tls1_3']], ['rsa2048wrong.test', ['-tls1_2', '-sigalgs', 'RSA+SHA256']], ['ed25519wrong.test', ['-tls1_3']]] as const) {
      const result = await sClient(pki, server.port, name, [...options], 'localhost');
      assert.equal(result.ok, false, result.output);
      assert.match(result.output, /bad signature/);
    }
    const handshake = await nodeHandshake(pki, server.port, 'ec256wrong.test', { checkServerIdentity: () => undefined });
    assert.match(handshake.error?.message ?? '', /bad signature|signature failure/); // OpenSSL 3.0 | 3.5 wording
  });

  test('TLS 1.2 static RSA key exchange fails cleanly with a readable error', async () => {
    const before = server.clientErrors.length;
    const result = await sClient(pki, server.port, 'rsa2048.test', ['-tls1_2', '-cipher', 'AES128-GCM-SHA256']);
    assert.equal(result.ok, false, result.output);
    assert.match(server.clientErrors.slice(before).join('\n'), /keyless: RSA key exchange \(TLS_RSA_\* cipher suites\) needs the private key/);
    const again = await sClient(pki, server.port, 'rsa2048.test', ['-tls1_2']);
    assert.ok(again.ok, again.output);
  });

  test('a certificate that does not match the keyless key is rejected like stock Node', () => {
    const stock = captureError(() => tls.createSecureContext({ key: pki.leaves.ec256.keyPem, cert: pki.leaves.ec256other.certPem }));
    const keyless = captureError(() => tls.createSecureContext({ key: bridge.keyPem('ec256', pki.leaves.ec256.spki), cert: pki.leaves.ec256other.certPem }));
    assert.match(stock.message, /key values mismatch/);
    assert.equal(keyless.message, stock.message);
  });

  test('metrics count the remote signatures', async () => {
    const text = await bridge.metrics.registry.metrics();
    assert.match(text, /hsmgw_keyless_remote_signs_total\{key="rsa3072"\} [1-9]/);
    assert.match(text, /hsmgw_keyless_sign_duration_seconds_count\{key="ec256",result="ok"\} [1-9]/);
  });
});

describe('keyless TLS client (mTLS upstream)', () => {
  let pki: Pki;
  let bridge: KeylessBridge;
  let server: TestServer;
  let log: string;

  before(async () => {
    pki = testPki();
    log = tempFile('keyless-log');
    bridge = await startBridge({
      client: { keyFile: pki.leaves.client.keyFile },
      clientrsa: { keyFile: pki.leaves.clientrsa.keyFile },
      'client-wrong': { keyFile: pki.leaves.ec256other.keyFile },
      // The upstream server's own key is keyless too: both signatures happen on this thread.
      rsa2048: { keyFile: pki.leaves.rsa2048.keyFile },
    }, { logFile: log });
    // The SNI context carries the CA too: TLS 1.2 verifies the client with it.
    const context = tls.createSecureContext({ key: bridge.keyPem('rsa2048', pki.leaves.rsa2048.spki), cert: pki.leaves.rsa2048.certPem, ca: pki.caPem });
    server = await startServer({ 'rsa2048.test': context }, { requestCert: true, rejectUnauthorized: true, ca: pki.caPem });
  });

  after(async () => {
    await server?.close();
    await bridge?.close();
  });

  for (const [name, algorithm, maxVersion] of [['client', 7, 'TLSv1.3'], ['clientrsa', 4, 'TLSv1.3'], ['clientrsa', 4, 'TLSv1.2']] as const) {
    test(`tls.connect presents a keyless ${name} client key over ${maxVersion}`, async () => {
      takeLog(log);
      const leaf = pki.leaves[name];
      const handshake = await nodeHandshake(pki, server.port, 'rsa2048.test', {
        key: bridge.keyPem(name, leaf.spki), cert: leaf.certPem, maxVersion,
      });
      assert.equal(handshake.error, undefined);
      assert.equal(handshake.authorized, true);
      assert.equal(handshake.protocol, maxVersion);
      assert.deepEqual(takeLog(log).sort(), [`${name} ${algorithm}`, `rsa2048 4`].sort());
    });
  }

  for (const version of ['-tls1_2', '-tls1_3']) {
    test(`openssl s_server ${version} verifies the keyless client key's signature`, async () => {
      const leaf = pki.leaves.client;
      // s_server -brief says nothing when it listens, and exits at once if its port was taken
      // meanwhile: retry (with a new port after an early exit) for up to 15 s.
      const deadline = Date.now() + 15_000;
      let attempt: SServerAttempt;
      do {
        const port = await freePort();
        attempt = await sServerHandshake(version, port, () => nodeHandshake(pki, port, 'ec256.test', { key: bridge.keyPem('client', leaf.spki), cert: leaf.certPem }), deadline);
      } while (attempt.exitedEarly && Date.now() < deadline);
      assert.equal(attempt.handshake?.error, undefined, attempt.output);
      assert.equal(attempt.code, 0, attempt.output);
      assert.match(attempt.output, /Peer certificate: CN = client\.test/);
      assert.match(attempt.output, /Signature type: ECDSA/);
      assert.match(attempt.output, /Verification: OK/);
    });
  }

  interface SServerAttempt {
    port: number;
    exitedEarly: boolean;
    handshake?: NodeHandshake;
    code: number | null;
    output: string;
  }

  /** One `openssl s_server -naccept 1` on `port` verifying a client certificate, and one client handshake. */
  async function sServerHandshake(version: string, port: number, connect: () => Promise<NodeHandshake>, deadline: number): Promise<SServerAttempt> {
    const serverProcess = spawn('openssl', ['s_server', '-accept', `127.0.0.1:${port}`, version, '-cert', path.join(pki.dir, 'ec256.pem'),
      '-key', pki.leaves.ec256.keyFile, '-Verify', '1', '-verify_return_error', '-CAfile', pki.caFile, '-naccept', '1', '-brief'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    let exited = false;
    serverProcess.stdout.on('data', (chunk: Buffer) => { output += chunk.toString(); });
    serverProcess.stderr.on('data', (chunk: Buffer) => { output += chunk.toString(); });
    serverProcess.stdin.on('error', () => undefined); // it may exit before reading its stdin
    const exitCode = new Promise<number | null>((resolve) => serverProcess.on('exit', (code) => { exited = true; resolve(code); }));
    const attempt: SServerAttempt = { port, exitedEarly: false, code: null, output: '' };
    try {
      let handshake = await connect();
      while (/ECONNREFUSED/.test(handshake.error?.message ?? '') && !exited && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        handshake = await connect();
      }
      if (exited && handshake.error !== undefined) return { ...attempt, exitedEarly: true, code: await exitCode, output };
      attempt.handshake = handshake;
      serverProcess.stdin.end(); // s_server flushes its report when it exits (after one connection)
      attempt.code = await exitCode;
      attempt.output = output;
      return attempt;
    } finally {
      serverProcess.kill();
    }
  }

  test('the upstream rejects a client signature made with the wrong key', async () => {
    const leaf = pki.leaves.client;
    const handshake = await nodeHandshake(pki, server.port, 'rsa2048.test', { key: bridge.keyPem('client-wrong', leaf.spki), cert: leaf.certPem });
    // TLS 1.3: the client learns of the rejection after its Finished, as an alert or a reset.
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.match(server.clientErrors.join('\n'), /bad signature|signature failure/);
    void handshake;
  });
});

function captureError(fn: () => unknown): Error {
  try {
    fn();
  } catch (error) {
    if (error instanceof Error) return error;
    throw error;
  }
  throw new Error('expected an error');
}
