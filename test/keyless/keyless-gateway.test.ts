/**
 * Keyless TLS end to end: a Node HTTPS server in this process whose key is a keyless reference,
 * the gateway in its own process signing with the SoftHSM token, and real clients (openssl
 * s_client, curl, Node tls.connect) verifying the handshake signature.
 */
import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as https from 'node:https';
import * as tls from 'node:tls';
import { execFile } from 'node:child_process';
import type { AddressInfo } from 'node:net';
import { GatewayClient, type KeylessTlsCredentials } from '../../client/gateway-client';
import { selfSignedCertificate, toPem } from '../../common/x509/certificates';
import { remoteCryptoKey, type RemoteKeyKind } from '../../common/x509/remote-crypto';
import { startGatewayProcess, type GatewayProcess } from '../support/gateway-process';

interface Run { code: number | null; out: string }

function run(cmd: string, args: string[], input?: string, timeoutMs = 15_000): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(cmd, args, { timeout: timeoutMs }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: `${stdout}${stderr}` });
    });
    child.stdin?.on('error', () => undefined); // a command may exit without reading its input
    child.stdin?.end(input ?? '');
  });
}

async function serve(creds: KeylessTlsCredentials, extra: https.ServerOptions = {}): Promise<{ server: https.Server; port: number; errors: string[] }> {
  const errors: string[] = [];
  const server = https.createServer({ ...creds, ...extra }, (_req, res) => res.end('hello from a keyless key\n'));
  server.on('tlsClientError', (err) => errors.push(err.message));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, port: (server.address() as AddressInfo).port, errors };
}

function sClient(port: number, caFile: string, args: string[]): Promise<Run> {
  return run('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-servername', 'localhost', '-verify_return_error', '-CAfile', caFile, '-brief', ...args], 'Q\n');
}

function nodeHandshake(port: number, ca: string, extra: tls.ConnectionOptions = {}): Promise<{ ok: boolean; error?: string; protocol?: string }> {
  return new Promise((resolve) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ca, ...extra }, () => {
      const protocol = socket.getProtocol() ?? undefined;
      socket.end();
      resolve({ ok: socket.authorized, protocol, error: socket.authorizationError?.toString() });
    });
    socket.on('error', (err) => resolve({ ok: false, error: err.message }));
    socket.setTimeout(10_000, () => { socket.destroy(); resolve({ ok: false, error: 'timeout' }); });
  });
}

/** A self-signed certificate for a token key without one, signed through the gateway. */
async function certificateFor(client: GatewayClient, name: string): Promise<string> {
  const info = await client.getKey(name);
  const kind: RemoteKeyKind = info.type === 'EC' ? { kind: 'ec', curve: info.curve as 'P-256' | 'P-384' } : { kind: 'rsa' };
  const der = await selfSignedCertificate(info.publicKey, remoteCryptoKey(kind, (alg, msg) => client.signMessage(name, alg as number, msg)), { subject: `CN=${name}.localhost`, san: { dns: ['localhost'], ip: ['127.0.0.1'] }, days: 30 });
  return toPem(der, 'CERTIFICATE');
}

describe('keyless TLS through the gateway', () => {
  let gw: GatewayProcess;
  let client: GatewayClient;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hsmgw-keyless-'));
  const creds = new Map<string, KeylessTlsCredentials & { caFile: string }>();

  before(async () => {
    gw = await startGatewayProcess({ pkcs11: { certificateRefreshMs: 60_000 } });
    client = new GatewayClient({ ...gw.clientOptions(), keylessSignTimeoutMs: 1000 });
    for (const name of ['dev-ec', 'test-ec384', 'dev-rsa', 'test-rsa3072']) {
      const cert = name.startsWith('dev-') ? undefined : await certificateFor(client, name);
      const c = await client.tlsCredentials(name, cert ? { cert } : {});
      const caFile = path.join(dir, `${name}.pem`);
      fs.writeFileSync(caFile, c.cert);
      creds.set(name, { ...c, caFile });
    }
  });
  after(async () => {
    await client.close();
    await gw.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('the key option holds only a reference: no private key material in it', () => {
    const c = creds.get('dev-ec');
    assert.ok(c);
    assert.doesNotMatch(c.key, /PRIVATE KEY/);
    assert.match(c.key, /^-----BEGIN HSM GATEWAY KEYLESS KEY-----/);
  });

  const matrix: Array<[string, string, string[], RegExp]> = [
    ['dev-ec', 'TLS 1.3', ['-tls1_3'], /Signature type: ECDSA/],
    ['dev-ec', 'TLS 1.2', ['-tls1_2'], /Signature type: ECDSA/],
    ['test-ec384', 'TLS 1.3', ['-tls1_3'], /Signature type: ECDSA/],
    ['test-ec384', 'TLS 1.2', ['-tls1_2'], /Signature type: ECDSA/],
    ['dev-rsa', 'TLS 1.3 (PSS)', ['-tls1_3'], /Signature type: RSA-PSS/],
    ['dev-rsa', 'TLS 1.2 PKCS#1 v1.5', ['-tls1_2', '-sigalgs', 'RSA+SHA256'], /Signature type: RSA\b/],
    ['dev-rsa', 'TLS 1.2 PSS', ['-tls1_2', '-sigalgs', 'RSA-PSS+SHA256'], /Signature type: RSA-PSS/],
    ['test-rsa3072', 'TLS 1.3 (PSS)', ['-tls1_3'], /Signature type: RSA-PSS/],
    ['test-rsa3072', 'TLS 1.2 PKCS#1 v1.5 SHA-384', ['-tls1_2', '-sigalgs', 'RSA+SHA384'], /Signature type: RSA\b/],
  ];
  for (const [name, label, args, signature] of matrix) {
    it(`openssl s_client -verify_return_error: ${name}, ${label}`, async () => {
      const c = creds.get(name);
      assert.ok(c);
      const { server, port } = await serve(c);
      try {
        const r = await sClient(port, c.caFile, args);
        assert.equal(r.code, 0, r.out);
        assert.match(r.out, /Verification: OK/);
        assert.match(r.out, signature);
      } finally {
        server.close();
      }
    });
  }

  it('static-RSA key exchange (TLS 1.2, kRSA) is refused cleanly and the server keeps serving', async () => {
    const c = creds.get('dev-rsa');
    assert.ok(c);
    const { server, port } = await serve(c);
    try {
      const r = await sClient(port, c.caFile, ['-tls1_2', '-cipher', 'AES128-GCM-SHA256']);
      assert.notEqual(r.code, 0, 'a kRSA handshake must not complete');
      const ok = await sClient(port, c.caFile, ['-tls1_2']);
      assert.equal(ok.code, 0, ok.out);
    } finally {
      server.close();
    }
  });

  it('curl and Node tls.connect accept the keyless server (EC and RSA)', async () => {
    for (const name of ['dev-ec', 'dev-rsa']) {
      const c = creds.get(name);
      assert.ok(c);
      const { server, port } = await serve(c);
      try {
        const r = await run('curl', ['-sS', '--cacert', c.caFile, `https://localhost:${port}/`]);
        assert.equal(r.out, 'hello from a keyless key\n');
        for (const maxVersion of ['TLSv1.3', 'TLSv1.2'] as const) {
          const h = await nodeHandshake(port, c.cert, { maxVersion });
          assert.deepEqual([h.ok, h.protocol], [true, maxVersion], h.error);
        }
      } finally {
        server.close();
      }
    }
  });

  it('several keyless keys in one process by SNI, next to an ordinary PEM key', async () => {
    const ec = creds.get('dev-ec');
    const ec384 = creds.get('test-ec384');
    const rsa = creds.get('dev-rsa');
    assert.ok(ec && ec384 && rsa);
    const pemCtx = tls.createSecureContext({ cert: fs.readFileSync(gw.env.pki.serverCert), key: fs.readFileSync(gw.env.pki.serverKey) });
    const contexts: Record<string, tls.SecureContext> = {
      'rsa.test': tls.createSecureContext(rsa), 'ec.test': tls.createSecureContext(ec), 'ec384.test': tls.createSecureContext(ec384), 'pem.test': pemCtx,
    };
    // The default context is RSA: Node's SNI switch adds the chosen context's certificate next
    // to the default one, and clients prefer ECDSA, so every EC name must get its own EC leaf.
    const server = tls.createServer({ ...rsa, SNICallback: (name, cb) => cb(null, contexts[name]) }, (s) => s.end('x'));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    try {
      const leaf = (servername: string, ca: string): Promise<string> => new Promise((resolve, reject) => {
        const s = tls.connect({ host: '127.0.0.1', port, servername, ca, checkServerIdentity: () => undefined }, () => {
          resolve(s.getPeerX509Certificate()?.subject ?? '');
          s.end();
        });
        s.on('error', reject);
      });
      assert.match(await leaf('rsa.test', rsa.cert), /CN=dev-rsa.localhost/);
      assert.match(await leaf('ec.test', ec.cert), /CN=dev-ec.localhost/);
      assert.match(await leaf('ec384.test', ec384.cert), /CN=test-ec384.localhost/);
      assert.match(await leaf('pem.test', fs.readFileSync(gw.env.pki.ca, 'utf8')), /CN=hsm-gateway/);
    } finally {
      server.close();
    }
  });

  it('a keyless key works as the client key of tls.connect (mTLS to an upstream)', async () => {
    const ec = creds.get('dev-ec');
    assert.ok(ec);
    const upstream = tls.createServer({
      cert: fs.readFileSync(gw.env.pki.serverCert), key: fs.readFileSync(gw.env.pki.serverKey),
      requestCert: true, rejectUnauthorized: true, ca: ec.cert,
    }, (s) => s.end(`client ${s.getPeerX509Certificate()?.subject}`));
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    const port = (upstream.address() as AddressInfo).port;
    try {
      const text = await new Promise<string>((resolve, reject) => {
        let data = '';
        const s = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ca: fs.readFileSync(gw.env.pki.ca), key: ec.key, cert: ec.cert }, () => undefined);
        s.on('data', (d: Buffer) => { data += d.toString(); });
        s.on('end', () => resolve(data));
        s.on('error', reject);
      });
      assert.match(text, /client CN=dev-ec.localhost/);
    } finally {
      upstream.close();
    }
  });

  it('200 concurrent handshakes through one process complete', { timeout: 60_000 }, async () => {
    const ec = creds.get('dev-ec');
    assert.ok(ec);
    const { server, port, errors } = await serve(ec);
    try {
      const results = await Promise.all(Array.from({ length: 200 }, () => nodeHandshake(port, ec.cert)));
      assert.equal(results.filter((r) => r.ok).length, 200, JSON.stringify(results.filter((r) => !r.ok).slice(0, 3)));
      assert.deepEqual(errors, []);
    } finally {
      server.close();
    }
  });
});

describe('keyless TLS: faults', () => {
  it('a gateway answering with another key\'s signature makes clients fail with a bad signature (negative control)', async () => {
    const gw = await startGatewayProcess({ keys: undefined });
    const client = new GatewayClient(gw.clientOptions());
    try {
      const c = await client.tlsCredentials('dev-ec');
      const { server, port } = await serve(c);
      const caFile = path.join(os.tmpdir(), `hsmgw-neg-${process.pid}.pem`);
      fs.writeFileSync(caFile, c.cert);
      try {
        assert.equal((await sClient(port, caFile, ['-tls1_3'])).code, 0, 'the control handshake works');
        // Re-point dev-ec at another P-256 key: the gateway now signs with the wrong key.
        gw.editConfig((doc) => { (doc.keys as Array<{ name: string; label: string }>).find((k) => k.name === 'dev-ec')!.label = 'alt-ec'; });
        gw.signal('SIGHUP');
        let r: Run = { code: 0, out: '' };
        for (let i = 0; i < 40 && r.code === 0; i++) {
          await new Promise((res) => setTimeout(res, 100));
          r = await sClient(port, caFile, ['-tls1_3']);
        }
        assert.notEqual(r.code, 0);
        assert.match(r.out, /bad signature|decrypt error|signature/i);
        const h = await nodeHandshake(port, c.cert);
        assert.equal(h.ok, false);
        // OpenSSL 3.0 inside Node reports a failed ECDSA check as "provider signature failure".
        assert.match(h.error ?? '', /bad signature|decrypt error|BAD_SIGNATURE|provider signature failure/i);
      } finally {
        server.close();
        fs.rmSync(caFile, { force: true });
      }
    } finally {
      await client.close();
      await gw.stop();
    }
  });

  it('gateway stopped, then restarted: handshakes fail at once with a readable error, then recover', { timeout: 60_000 }, async () => {
    const gw = await startGatewayProcess();
    const client = new GatewayClient({ ...gw.clientOptions(), keylessSignTimeoutMs: 1500, maxRetries: 1 });
    try {
      const c = await client.tlsCredentials('dev-ec');
      const { server, port, errors } = await serve(c);
      try {
        assert.equal((await nodeHandshake(port, c.cert)).ok, true);
        assert.equal(await gw.terminate(), 0);
        const started = Date.now();
        const down = await nodeHandshake(port, c.cert);
        assert.equal(down.ok, false);
        assert.ok(Date.now() - started < 5000, 'fails within the sign timeout, no hang');
        assert.ok(errors.some((e) => /keyless/.test(e)), `server-side error is readable: ${errors.join(' / ')}`);
        await gw.restart();
        let back = false;
        for (let i = 0; i < 50 && !back; i++) {
          back = (await nodeHandshake(port, c.cert)).ok;
          if (!back) await new Promise((r) => setTimeout(r, 200));
        }
        assert.ok(back, 'handshakes work again after the gateway restarts');
      } finally {
        server.close();
      }
    } finally {
      await client.close();
      await gw.stop();
    }
  });

  it('a key no longer authorized fails handshakes cleanly; re-authorized, it recovers', { timeout: 60_000 }, async () => {
    const gw = await startGatewayProcess();
    const client = new GatewayClient(gw.clientOptions());
    try {
      const c = await client.tlsCredentials('dev-ec');
      const { server, port, errors } = await serve(c);
      try {
        assert.equal((await nodeHandshake(port, c.cert)).ok, true);
        let original: unknown;
        gw.editConfig((doc) => {
          const rules = (doc.authorization as { rules: Array<{ keys: string[] }> }).rules;
          original = structuredClone(rules[0].keys);
          rules[0].keys = rules[0].keys.filter((k) => k !== 'dev-ec');
        });
        gw.signal('SIGHUP');
        let denied = false;
        for (let i = 0; i < 40 && !denied; i++) {
          await new Promise((r) => setTimeout(r, 100));
          denied = !(await nodeHandshake(port, c.cert)).ok;
        }
        assert.ok(denied);
        assert.ok(errors.some((e) => /PERMISSION_DENIED/.test(e)), errors.join(' / '));
        gw.editConfig((doc) => { (doc.authorization as { rules: Array<{ keys: unknown }> }).rules[0].keys = original; });
        gw.signal('SIGHUP');
        let ok = false;
        for (let i = 0; i < 40 && !ok; i++) {
          await new Promise((r) => setTimeout(r, 100));
          ok = (await nodeHandshake(port, c.cert)).ok;
        }
        assert.ok(ok);
      } finally {
        server.close();
      }
    } finally {
      await client.close();
      await gw.stop();
    }
  });
});
