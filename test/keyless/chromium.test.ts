/**
 * A real browser accepts a keyless server (blocking and non-blocking modes), and refuses one
 * whose handshake is signed by the wrong key. Chromium trusts the self-signed certificate by its
 * SPKI hash only, so it still checks the handshake signature. Chromium does not offer Ed25519
 * for server certificates: a keyless Ed25519 server fails that browser cleanly and keeps serving
 * clients that do (openssl, curl, Node).
 */
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as https from 'node:https';
import { createHash, X509Certificate } from 'node:crypto';
import { execFile } from 'node:child_process';
import type { AddressInfo } from 'node:net';
import { GatewayClient, type KeylessTlsCredentials } from '../../client/gateway-client';
import { startGatewayProcess } from '../support/gateway-process';
import { nodeHandshake, startBridge, testPki } from './support/keyless-kit';

const CHROMIUM = '/usr/bin/chromium';

function loadPage(url: string, certPem: string): Promise<{ ok: boolean; out: string }> {
  const spki = new X509Certificate(certPem).publicKey.export({ type: 'spki', format: 'der' });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hsmgw-chromium-'));
  const args = [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', `--user-data-dir=${dir}`,
    `--ignore-certificate-errors-spki-list=${createHash('sha256').update(spki).digest('base64')}`, '--dump-dom', url,
  ];
  return new Promise((resolve) => {
    execFile(CHROMIUM, args, { timeout: 45_000 }, (err, stdout, stderr) => {
      fs.rmSync(dir, { recursive: true, force: true });
      resolve({ ok: !err && stdout.includes('keyless-ok'), out: `${stdout}\n${stderr}`.slice(0, 2000) });
    });
  });
}

async function serve(creds: KeylessTlsCredentials): Promise<{ server: https.Server; url: string }> {
  const server = https.createServer({ ...creds }, (_q, r) => r.end('<html><body>keyless-ok</body></html>'));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, url: `https://localhost:${(server.address() as AddressInfo).port}/` };
}

describe('Chromium', { skip: fs.existsSync(CHROMIUM) ? false : `${CHROMIUM} is not installed (apt-get install chromium)` }, () => {
  for (const keylessMode of [undefined, 'blocking'] as const) {
    it(`loads a page from a keyless server, EC and RSA (${keylessMode ?? 'default'} mode); a wrong-key signature is refused`, { timeout: 180_000 }, async () => {
      const gw = await startGatewayProcess();
      const client = new GatewayClient({ ...gw.clientOptions(), ...(keylessMode !== undefined ? { keylessMode } : {}) });
      try {
        for (const name of ['dev-ec', 'dev-rsa']) {
          const creds = await client.tlsCredentials(name);
          const { server, url } = await serve(creds);
          try {
            const page = await loadPage(url, creds.cert);
            assert.ok(page.ok, `${name}: ${page.out}`);
          } finally {
            server.close();
          }
        }
        // Negative control: dev-ec re-pointed at another P-256 key on the gateway.
        const creds = await client.tlsCredentials('dev-ec');
        const { server, url } = await serve(creds);
        try {
          gw.editConfig((doc) => { (doc.keys as Array<{ name: string; label: string }>).find((k) => k.name === 'dev-ec')!.label = 'alt-ec'; });
          gw.signal('SIGHUP');
          const probe = new GatewayClient(gw.clientOptions());
          const wanted = (await probe.getKey('alt-ec')).publicKey;
          for (let i = 0; i < 50 && !(await probe.getKey('dev-ec', { refresh: true })).publicKey.equals(wanted); i++) await new Promise((r) => setTimeout(r, 100));
          await probe.close();
          const page = await loadPage(url, creds.cert);
          assert.equal(page.ok, false, 'Chromium must refuse a handshake signed by the wrong key');
        } finally {
          server.close();
        }
      } finally {
        await client.close();
        await gw.stop();
      }
    });
  }

  it('an Ed25519 keyless server: Chromium fails the handshake cleanly (no Ed25519 server certificates), the server keeps serving', { timeout: 120_000 }, async () => {
    const pki = testPki();
    const bridge = await startBridge({ ed25519: { keyFile: pki.leaves.ed25519.keyFile } });
    const { server, url } = await serve({ key: bridge.keyPem('ed25519', pki.leaves.ed25519.spki), cert: pki.leaves.ed25519.certPem });
    const errors: string[] = [];
    server.on('tlsClientError', (error) => errors.push(error.message));
    try {
      const page = await loadPage(url, pki.leaves.ed25519.certPem);
      assert.equal(page.ok, false, 'Chromium has no Ed25519 server certificates');
      // The server said why (no signature algorithm in common), and the process kept serving.
      assert.match(errors.join('\n'), /no suitable signature algorithm|no shared signature algorithms|handshake failure/i);
      const port = (server.address() as AddressInfo).port;
      const handshake = await nodeHandshake(pki, port, 'ed25519.test');
      assert.equal(handshake.error, undefined);
      assert.equal(handshake.authorized, true);
    } finally {
      server.close();
      await bridge.close();
    }
  });
});
