// `hsm-gateway csr`, `cert self-sign` (signed by HSM keys through a running gateway) and
// `cert install` (direct PKCS#11), checked with openssl and with GetKey on the running gateway.
import assert from 'node:assert/strict';
import { constants, createPublicKey, verify, webcrypto, X509Certificate } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { GatewayClient } from '../../client/gateway-client';
import { GatewaySigner } from '../../client/index';
import * as x509 from '../../common/x509/x509-library';
import {
  cli, cliJson, createLifecycleState, createOpensslCa, devClient, listTokenObjects, removeState, run, startGatewayProcess, writeGatewayConfig,
  type GatewayProcess, type LifecycleState, type OpensslCa,
} from './support/lifecycle-kit';

interface TokenKeyJson { label: string; id: string; publicKeySha256: string; certificate?: { subject: string; issuer: string; notAfter: string; chainLength: number; fingerprint256: string } }

const pemOf = (der: Buffer): string => new X509Certificate(der).toString();

describe('csr, cert self-sign and cert install', () => {
  let state: LifecycleState;
  let gateway: GatewayProcess;
  let client: GatewayClient;
  let ca: OpensslCa;
  let file: (name: string) => string;

  before(async () => {
    state = await createLifecycleState('certs');
    file = (name) => path.join(state.dir, name);
    // A key that is on the token but not in the gateway's config.
    await cliJson(state, ['key', 'generate', '--name', 'unlisted', '--type', 'ec-p256']);
    await cliJson(state, ['key', 'generate', '--name', 'api-p384', '--type', 'ec-p384']);
    await cliJson(state, ['key', 'generate', '--name', 'api-rsa3072', '--type', 'rsa-3072']);
    const config = writeGatewayConfig(state, 'gateway.yaml', [{ name: 'api-p384', label: 'api-p384' }, { name: 'api-rsa3072', label: 'api-rsa3072' }]);
    [gateway, ca] = await Promise.all([startGatewayProcess(state, config), createOpensslCa(file('ca'), 'Lifecycle Test')]);
    client = devClient(state, gateway.endpoint);
  });

  after(async () => {
    client?.close();
    await gateway?.stop();
    removeState(state);
  });

  const csrCases: Array<{ key: string; extra: string[]; signature: RegExp }> = [
    { key: 'dev-ec', extra: [], signature: /Signature Algorithm: ecdsa-with-SHA256/ },
    { key: 'api-p384', extra: [], signature: /Signature Algorithm: ecdsa-with-SHA384/ },
    { key: 'dev-rsa', extra: [], signature: /Signature Algorithm: sha256WithRSAEncryption/ },
    { key: 'dev-rsa', extra: ['--rsa-pss'], signature: /Signature Algorithm: rsassaPss[\s\S]*Hash Algorithm: sha256[\s\S]*Salt Length: 0x20/ },
    { key: 'api-rsa3072', extra: ['--hash', 'sha512'], signature: /Signature Algorithm: sha512WithRSAEncryption/ },
  ];

  test('csr: a PKCS#10 request signed by the HSM key through the gateway; openssl req -verify accepts it', async () => {
    await Promise.all(csrCases.map(async ({ key, extra, signature }, i) => {
      const out = file(`csr-${i}.pem`);
      const r = await cli(state, ['csr', '--endpoint', gateway.endpoint, '--key', key, '--subject', `CN=${key}.example.test, O=Lifecycle Test`,
        '--san', `dns:${key}.example.test,dns:www.${key}.example.test`, '--san', 'ip:192.0.2.10,uri:spiffe://example.test/web', '--out', out, ...extra]);
      assert.equal(r.code, 0, r.stderr);
      const verified = await run('openssl', ['req', '-in', out, '-verify', '-noout', '-text']);
      assert.equal(verified.code, 0, verified.stderr);
      assert.match(verified.stderr + verified.stdout, /(self-signature verify OK|verify OK)/);
      assert.match(verified.stdout, new RegExp(`Subject: CN = ${key}\\.example\\.test, O = Lifecycle Test`));
      assert.match(verified.stdout, new RegExp(`DNS:${key}\\.example\\.test, DNS:www\\.${key}\\.example\\.test, IP Address:192\\.0\\.2\\.10, URI:spiffe://example\\.test/web`));
      assert.match(verified.stdout, signature);
      // The request carries the HSM key's public key.
      const pub = await run('openssl', ['req', '-in', out, '-pubkey', '-noout']);
      const info = await client.getKey(key, { refresh: true });
      assert.ok(createPublicKey(pub.stdout).export({ type: 'spki', format: 'der' }).equals(info.publicKey), `${key}: CSR public key is the HSM key's`);
    }));
  });

  test('csr --json carries the PEM; the gateway refusing the key exits 3, an unreachable gateway exits 1', async () => {
    const ok = await cliJson<{ key: string; signatureAlgorithm: string; csr: string; san: string[] }>(state, ['csr', '--endpoint', gateway.endpoint, '--key', 'dev-ec', '--subject', 'CN=json.example.test', '--san', 'dns:json.example.test']);
    assert.equal(ok.key, 'dev-ec');
    assert.equal(ok.signatureAlgorithm, 'ECDSA_SHA256');
    assert.deepEqual(ok.san, ['DNS:json.example.test']);
    assert.equal((await run('openssl', ['req', '-verify', '-noout'], { input: ok.csr })).code, 0);

    const refused = await cli(state, ['csr', '--endpoint', gateway.endpoint, '--key', 'unlisted', '--subject', 'CN=x', '--json']);
    assert.equal(refused.code, 3, refused.stderr);
    assert.equal((JSON.parse(refused.stdout) as { grpcCode: string }).grpcCode, 'PERMISSION_DENIED');
    const down = await cli(state, ['csr', '--endpoint', '127.0.0.1:1', '--key', 'dev-ec', '--subject', 'CN=x', '--json']);
    assert.equal(down.code, 1, down.stderr);
    assert.equal((JSON.parse(down.stdout) as { reason: string }).reason, 'gateway-unreachable');
    const badSubject = await cli(state, ['csr', '--endpoint', gateway.endpoint, '--key', 'dev-ec', '--subject', 'example.test']);
    assert.equal(badSubject.code, 2);
  });

  test('cert self-sign: openssl x509 reads it, openssl verify accepts it against itself, validity is --days', async () => {
    await Promise.all([['dev-ec', []], ['api-rsa3072', ['--rsa-pss']], ['api-p384', []]].map(async ([key, extra], i) => {
      const out = file(`self-${i}.pem`);
      const r = await cli(state, ['cert', 'self-sign', '--endpoint', gateway.endpoint, '--key', key as string, '--days', '7', '--san', 'dns:localhost,ip:127.0.0.1', '--out', out, ...(extra as string[])]);
      assert.equal(r.code, 0, r.stderr);
      const text = await run('openssl', ['x509', '-in', out, '-noout', '-text']);
      assert.equal(text.code, 0, text.stderr);
      assert.match(text.stdout, new RegExp(`Issuer: CN = ${key}\\n[\\s\\S]*Subject: CN = ${key}\\n`));
      assert.match(text.stdout, /DNS:localhost, IP Address:127\.0\.0\.1/);
      const verify = await run('openssl', ['verify', '-CAfile', out, out]);
      assert.equal(verify.code, 0, verify.stdout + verify.stderr);
      assert.match(verify.stdout, /: OK\n/);
      const cert = new X509Certificate(fs.readFileSync(out));
      const days = (Date.parse(cert.validTo) - Date.parse(cert.validFrom)) / 86_400_000;
      assert.equal(Math.round(days), 7);
      const info = await client.getKey(key as string);
      assert.ok(cert.publicKey.export({ type: 'spki', format: 'der' }).equals(info.publicKey));
    }));
  });

  test('cert install: a CA-issued chain for the key is stored on the token; GetKey returns it after SIGHUP; a renewal replaces it', async () => {
    const csrFile = file('api-p384.csr');
    assert.equal((await cli(state, ['csr', '--endpoint', gateway.endpoint, '--key', 'api-p384', '--subject', 'CN=api.example.test', '--san', 'dns:api.example.test', '--out', csrFile])).code, 0);
    const leaf = await ca.issue(csrFile, 20, 'api.example.test');
    // Intermediate first and the root included: the order in the file does not matter.
    fs.writeFileSync(file('api-chain.pem'), ca.intermediatePem + leaf + ca.rootPem);
    const installed = await cliJson<{ stored: number; removed: number; unchanged: boolean; gatewayNames: string[]; certificate: { subject: string; issuer: string; chainLength: number } }>(
      state, ['cert', 'install', '--name', 'api-p384', '--chain', file('api-chain.pem'), '--config', path.join(state.dir, 'gateway.yaml')]);
    assert.deepEqual({ stored: installed.stored, removed: installed.removed, unchanged: installed.unchanged }, { stored: 3, removed: 0, unchanged: false });
    assert.deepEqual(installed.gatewayNames, ['api-p384']);
    assert.equal(installed.certificate.subject, 'CN=api.example.test');
    assert.equal(installed.certificate.issuer, 'CN=Lifecycle Test Intermediate');
    assert.equal(installed.certificate.chainLength, 3);

    const listed = (await cliJson<TokenKeyJson[]>(state, ['key', 'list'])).find((k) => k.label === 'api-p384');
    assert.equal(listed?.certificate?.subject, 'CN=api.example.test');
    assert.equal(listed?.certificate?.notAfter, new Date(new X509Certificate(leaf).validTo).toISOString());

    gateway.hup();
    const expected = [leaf, ca.intermediatePem, ca.rootPem].map((p) => new X509Certificate(p).raw);
    await waitFor(async () => chainOf(client, 'api-p384'), (chain) => sameChain(chain, expected), 5_000, 'GetKey returns leaf, intermediate, root after SIGHUP');

    // Installing the same chain again changes nothing.
    const again = await cliJson<{ unchanged: boolean }>(state, ['cert', 'install', '--name', 'api-p384', '--chain', file('api-chain.pem')]);
    assert.equal(again.unchanged, true);

    // A renewal (new leaf for the same key, no root this time) replaces the whole chain.
    const renewed = await ca.issue(csrFile, 40, 'api.example.test');
    fs.writeFileSync(file('api-renewed.pem'), renewed + ca.intermediatePem);
    const replaced = await cliJson<{ stored: number; removed: number }>(state, ['cert', 'install', '--name', 'api-p384', '--chain', file('api-renewed.pem')]);
    assert.deepEqual(replaced, { ...replaced, stored: 2, removed: 3 });
    gateway.hup();
    const renewedChain = [renewed, ca.intermediatePem].map((p) => new X509Certificate(p).raw);
    await waitFor(async () => chainOf(client, 'api-p384'), (chain) => sameChain(chain, renewedChain), 5_000, 'GetKey returns the renewed chain after SIGHUP');
    const certs = await listTokenObjects(state, 'cert');
    assert.equal(certs.split('Certificate Object').length - 1, 2 + 2, 'dev-ec and dev-rsa self-signed + the renewed leaf and intermediate: no leftovers');
  });

  test('cert install refuses a mismatched, broken or expired chain and leaves the token unchanged (exit 1)', async () => {
    const before = await listTokenObjects(state, 'cert');
    const beforeKeys = await cliJson<TokenKeyJson[]>(state, ['key', 'list']);
    const apiChain = file('api-renewed.pem');

    // The api-p384 chain offered for dev-ec: the leaf's public key is not dev-ec's.
    const mismatch = await cli(state, ['cert', 'install', '--name', 'dev-ec', '--chain', apiChain, '--json']);
    assert.equal(mismatch.code, 1, mismatch.stderr);
    const body = JSON.parse(mismatch.stdout) as { reason: string; error: string };
    assert.equal(body.reason, 'public-key-mismatch');
    assert.match(body.error, /no certificate in the file is for this key.*nothing was written/);

    // A self-signed certificate of another key, also a mismatch.
    const selfOther = file('self-0.pem');
    assert.equal(JSON.parse((await cli(state, ['cert', 'install', '--name', 'api-rsa3072', '--chain', selfOther, '--json'])).stdout).reason, 'public-key-mismatch');

    // The leaf with the root but without its intermediate: broken chain.
    const leafOnly = fs.readFileSync(apiChain, 'utf8').split(/(?<=-----END CERTIFICATE-----\n)/)[0];
    fs.writeFileSync(file('broken.pem'), leafOnly + ca.rootPem);
    const broken = await cli(state, ['cert', 'install', '--name', 'api-p384', '--chain', file('broken.pem'), '--json']);
    assert.equal(broken.code, 1);
    assert.equal((JSON.parse(broken.stdout) as { reason: string }).reason, 'broken-chain');

    // An expired certificate for the right key.
    const info = await client.getKey('api-p384');
    fs.writeFileSync(file('expired.pem'), await expiredCertificate(info.publicKey));
    const expired = await cli(state, ['cert', 'install', '--name', 'api-p384', '--chain', file('expired.pem'), '--json']);
    assert.equal(expired.code, 1);
    assert.equal((JSON.parse(expired.stdout) as { reason: string }).reason, 'expired');

    // Not a PEM chain at all; an unknown key.
    fs.writeFileSync(file('empty.pem'), 'nothing here\n');
    assert.equal(JSON.parse((await cli(state, ['cert', 'install', '--name', 'api-p384', '--chain', file('empty.pem'), '--json'])).stdout).reason, 'no-certificate');
    assert.equal(JSON.parse((await cli(state, ['cert', 'install', '--name', 'no-such-key', '--chain', apiChain, '--json'])).stdout).reason, 'key-not-found');

    assert.equal(await listTokenObjects(state, 'cert'), before, 'no certificate object was added or removed');
    assert.deepEqual(await cliJson<TokenKeyJson[]>(state, ['key', 'list']), beforeKeys);
  });
});

describe('GatewaySigner (library): sign(data), JWS/JWT and a WebCrypto-shaped key, through a real gateway', () => {
  let state: LifecycleState;
  let gateway: GatewayProcess;
  let client: GatewayClient;

  before(async () => {
    state = await createLifecycleState('signer');
    gateway = await startGatewayProcess(state, writeGatewayConfig(state, 'gateway.yaml', []));
    client = devClient(state, gateway.endpoint);
  });
  after(async () => {
    client?.close();
    await gateway?.stop();
    removeState(state);
  });

  test('sign(data) verifies with node:crypto: ECDSA (DER and r||s), RSA PKCS#1 v1.5 and PSS; data of any size', async () => {
    const data = Buffer.alloc(1024 * 1024, 7); // beyond the gateway's message cap: hashed here, only the digest travels
    const ec = await GatewaySigner.create(client, 'dev-ec');
    assert.equal(ec.algorithm, 'ECDSA_SHA256');
    assert.equal(ec.jwsAlgorithm, 'ES256');
    assert.ok(verify('sha256', data, ec.publicKey, await ec.sign(data)));
    const raw = await ec.sign(data, { dsaEncoding: 'ieee-p1363' });
    assert.equal(raw.length, 64);
    assert.ok(verify('sha256', data, { key: ec.publicKey, dsaEncoding: 'ieee-p1363' }, raw));

    const rsa = await GatewaySigner.create(client, 'dev-rsa', { hash: 'SHA-384' });
    assert.equal(rsa.jwsAlgorithm, 'RS384');
    assert.ok(verify('sha384', data, { key: rsa.publicKey, padding: constants.RSA_PKCS1_PADDING }, await rsa.sign(data)));
    const pss = await GatewaySigner.create(client, 'dev-rsa', { rsaPadding: 'pss' });
    assert.equal(pss.jwsAlgorithm, 'PS256');
    assert.ok(verify('sha256', data, { key: pss.publicKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST }, await pss.sign(data)));
  });

  test('signJwt produces a compact JWS that node:crypto verifies (ES256 and RS256)', async () => {
    for (const [key, hash, options] of [['dev-ec', 'sha256', {}], ['dev-rsa', 'sha256', { padding: constants.RSA_PKCS1_PADDING }]] as const) {
      const signer = await GatewaySigner.create(client, key);
      const token = await signer.signJwt({ sub: 'service-a', iat: 1_700_000_000 }, { kid: key });
      const [h, p, sig] = token.split('.');
      assert.deepEqual(JSON.parse(Buffer.from(h, 'base64url').toString()), { alg: signer.jwsAlgorithm, typ: 'JWT', kid: key });
      assert.deepEqual(JSON.parse(Buffer.from(p, 'base64url').toString()), { sub: 'service-a', iat: 1_700_000_000 });
      assert.ok(verify(hash, Buffer.from(`${h}.${p}`), { key: signer.publicKey, dsaEncoding: 'ieee-p1363', ...options }, Buffer.from(sig, 'base64url')), key);
    }
  });

  test('cryptoKey + crypto.subtle.sign behave like WebCrypto; node WebCrypto verifies the result', async () => {
    const signer = await GatewaySigner.create(client, 'dev-ec');
    assert.equal(signer.cryptoKey.type, 'private');
    assert.equal(signer.cryptoKey.extractable, false);
    assert.deepEqual(signer.cryptoKey.usages, ['sign']);
    const data = Buffer.from('webcrypto shaped');
    const signature = await signer.crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, signer.cryptoKey as unknown as webcrypto.CryptoKey, data);
    const publicKey = await webcrypto.subtle.importKey('spki', signer.spki, { name: 'ECDSA', namedCurve: 'P-256' }, false, ['verify']);
    assert.ok(await webcrypto.subtle.verify({ name: 'ECDSA', hash: 'SHA-256' }, publicKey, signature, data));
  });

  test('a key this client may not use is refused with the gateway code', async () => {
    await assert.rejects(GatewaySigner.create(client, 'no-such-key'), { name: 'GatewayClientError', codeName: 'PERMISSION_DENIED' });
  });
});

async function chainOf(client: GatewayClient, key: string): Promise<Buffer[]> {
  return (await client.getKey(key, { refresh: true })).certificateChain;
}

function sameChain(actual: Buffer[], expected: Buffer[]): boolean {
  return actual.length === expected.length && actual.every((der, i) => der.equals(expected[i]));
}

async function waitFor<T>(read: () => Promise<T>, ok: (value: T) => boolean, timeoutMs: number, what: string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: T = await read();
  while (!ok(last)) {
    if (Date.now() > deadline) assert.fail(`${what}: not within ${timeoutMs} ms (last: ${JSON.stringify(last).slice(0, 200)})`);
    await new Promise((r) => setTimeout(r, 100));
    last = await read();
  }
  return last;
}

/** A certificate for `spki` that expired yesterday, issued by a throwaway CA. */
async function expiredCertificate(spki: Buffer): Promise<string> {
  type X509Crypto = Parameters<typeof x509.cryptoProvider.set>[0];
  x509.cryptoProvider.set(webcrypto as unknown as X509Crypto);
  const caKeys = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify']) as webcrypto.CryptoKeyPair;
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.create({
    subject: 'CN=expired.example.test', issuer: 'CN=Throwaway CA', notBefore: new Date(now - 30 * 86_400_000), notAfter: new Date(now - 86_400_000),
    publicKey: new x509.PublicKey(new Uint8Array(spki).buffer), signingKey: caKeys.privateKey as unknown as CryptoKeyLike, signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
  });
  return pemOf(Buffer.from(cert.rawData));
}

type CryptoKeyLike = Parameters<typeof x509.X509CertificateGenerator.create>[0] extends infer P ? P extends { signingKey: infer K } ? K : never : never;
