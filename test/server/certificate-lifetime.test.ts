/**
 * Connections die with their certificate (docs/SECURITY.md): a call on a connection whose client
 * certificate has expired is refused and the connection closed; after the client CA or the CRL
 * changes, open connections whose certificate no longer passes are closed within seconds;
 * every connection is closed after limits.maxConnectionAgeMs. The clients are raw HTTP/2
 * sessions, so the GOAWAY and the close are seen as they happen.
 */
import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type * as http2 from 'node:http2';
import { randomBytes, X509Certificate } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { SignatureAlgorithm, SignRequest, SignResponse } from '../../proto/generated/hsmgateway/v1/signer';
import { createCertificateAuthority, type CertificateAuthority } from '../../server/bootstrap/dev-pki';
import * as x509 from '../../common/x509/x509-library';
import { IDENTITIES, loadDevCa, testEnvironment, writeIdentity, type ClientIdentity } from '../support/test-environment';
import { startTestGateway, type TestGateway } from '../support/test-gateway';
import { connectRaw, RawSignStream, rawUnary, SessionWatch, SIGN_PATH } from '../support/raw-grpc';
import { parsePrometheusText, sampleValue } from '../support/prometheus-text';
import { verifySignature } from '../support/signatures';
import { writePemFile } from '../../common/pem-file';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function signRequest(message: Buffer, requestId = 1n): Uint8Array {
  return SignRequest.encode({ key: 'dev-ec', algorithm: SignatureAlgorithm.ECDSA_SHA256, input: { $case: 'message', value: message }, requestId }).finish();
}

async function metric(gw: TestGateway, name: string, labels: Record<string, string>): Promise<number> {
  return sampleValue(parsePrometheusText(await (await fetch(gw.metricsUrl)).text()), name, labels);
}

/** Writes a file the way deployment tools do: a new file renamed over the old one. */
function replaceFile(file: string, content: string): void {
  fs.writeFileSync(`${file}.new`, content);
  fs.renameSync(`${file}.new`, file);
}

async function crlPem(ca: CertificateAuthority, revoked: ClientIdentity[]): Promise<string> {
  const crl = await x509.X509CrlGenerator.create({
    issuer: ca.cert.subject,
    thisUpdate: new Date(Date.now() - 60_000),
    nextUpdate: new Date(Date.now() + 86_400_000),
    entries: revoked.map((id) => ({ serialNumber: new X509Certificate(fs.readFileSync(id.cert)).serialNumber, revocationDate: new Date(Date.now() - 1000) })),
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    signingKey: ca.keys.privateKey as unknown as x509.X509CertificateCreateWithKeyParams['signingKey'],
  });
  // OpenSSL reads the standard label only.
  return `-----BEGIN X509 CRL-----\n${crl.toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '')}\n-----END X509 CRL-----\n`;
}

/** A raw session that signs once (verified), watched for its GOAWAY and close. */
async function signingSession(gw: TestGateway, identity: ClientIdentity, spki: Buffer): Promise<{ session: http2.ClientHttp2Session; watch: SessionWatch }> {
  const session = await connectRaw({ port: gw.gateway.grpcPort, ca: gw.env.pki.ca, identity });
  const watch = new SessionWatch(session);
  const message = randomBytes(32);
  const answer = await rawUnary(session, SIGN_PATH, signRequest(message));
  assert.equal(grpc.status[answer.code], 'OK', answer.details);
  assert.ok(verifySignature(spki, SignatureAlgorithm.ECDSA_SHA256, message, Buffer.from(SignResponse.decode(answer.messages[0]).signature)));
  return { session, watch };
}

/** Whether a new connection with this certificate gets through the TLS handshake. */
async function connects(gw: TestGateway, identity: ClientIdentity): Promise<boolean> {
  try {
    const session = await connectRaw({ port: gw.gateway.grpcPort, ca: gw.env.pki.ca, identity });
    // The server verifies the certificate after the handshake and closes at once when it fails.
    const ok = await Promise.race([rawUnary(session, SIGN_PATH, signRequest(randomBytes(8))).then(() => true, () => false), sleep(3000).then(() => false)]);
    session.destroy();
    return ok;
  } catch {
    return false;
  }
}

describe('a client certificate that expires while its connections are open', () => {
  let gw: TestGateway;
  let dir: string;
  let spki: Buffer;

  before(async () => {
    gw = await startTestGateway();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cert-lifetime-'));
    spki = (await gw.client().getKey('dev-ec')).publicKey;
  });
  after(async () => {
    await gw.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a call after expiry is UNAUTHENTICATED and the connection gets GOAWAY, then closes; a SignStream opened before stops signing; new connections are refused', async () => {
    const devCa = await loadDevCa(path.dirname(gw.env.pki.ca));
    // X.509 times have whole seconds: expiry 3-4 s from now.
    const notAfter = new Date(Math.ceil(Date.now() / 1000) * 1000 + 3000);
    const shortLived = await writeIdentity(dir, 'short-lived', devCa, { commonName: 'short-lived', uri: [IDENTITIES.dev], usage: 'client', notBefore: new Date(Date.now() - 60_000), notAfter });
    const unary = await signingSession(gw, shortLived, spki);
    const streaming = await signingSession(gw, shortLived, spki);
    const stream = new RawSignStream(streaming.session);
    stream.send(signRequest(randomBytes(16), 7n));
    assert.equal(SignResponse.decode(await stream.next() as Buffer).errorCode, 0, 'the stream signs before expiry');

    await sleep(notAfter.getTime() - Date.now() + 1100);
    const after = await rawUnary(unary.session, SIGN_PATH, signRequest(randomBytes(32)));
    assert.equal(grpc.status[after.code], 'UNAUTHENTICATED', after.details);
    assert.match(after.details, /client certificate has expired/);
    stream.send(signRequest(randomBytes(16), 8n));
    const item = SignResponse.decode(await stream.next() as Buffer);
    assert.deepEqual([grpc.status[item.errorCode], item.requestId], ['UNAUTHENTICATED', 8n], item.errorMessage);
    assert.equal(item.signature.length, 0);

    for (const { watch } of [unary, streaming]) {
      await Promise.race([watch.closed, sleep(3000)]);
      assert.ok(watch.goawayAt !== undefined, 'GOAWAY first');
      assert.ok(watch.closedAt !== undefined && watch.closedAt >= watch.goawayAt, 'then the connection closes');
    }
    assert.equal(await connects(gw, shortLived), false, 'a new connection with the expired certificate is refused');
    assert.equal(await metric(gw, 'hsmgw_connections_closed_total', { reason: 'certificate_expired' }), 2);
    assert.ok(await metric(gw, 'hsmgw_tls_handshake_failures_total', { reason: 'certificate_expired' }) >= 1);
  });
});

describe('client CA and CRL changes reach open connections', () => {
  let gw: TestGateway;
  let dir: string;
  let spki: Buffer;
  let devCa: CertificateAuthority;
  const ids: Record<string, ClientIdentity> = {};
  let clientCa: string;
  let crl: string;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cert-reload-'));
    const pki = path.dirname((await testEnvironment()).pki.ca);
    devCa = await loadDevCa(pki);
    for (const name of ['revoked-at-start', 'revoked-later', 'stays']) {
      ids[name] = await writeIdentity(dir, name, devCa, { commonName: name, uri: [IDENTITIES.dev], usage: 'client' });
    }
    clientCa = path.join(dir, 'clients-ca.pem');
    crl = path.join(dir, 'clients.crl');
    fs.copyFileSync(path.join(pki, 'ca.pem'), clientCa);
    fs.writeFileSync(crl, await crlPem(devCa, [ids['revoked-at-start']]));
    gw = await startTestGateway({ configFile: path.join(dir, 'config.yaml'), watchIntervalMs: 100, tls: { clientCa, crl } });
    spki = (await gw.client().getKey('dev-ec')).publicKey;
  });
  after(async () => {
    await gw.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('tls.crl is checked at handshake: a revoked certificate is refused, the others get in', async () => {
    assert.equal(await connects(gw, ids['revoked-at-start']), false);
    assert.equal(await connects(gw, ids.stays), true);
    assert.ok(await metric(gw, 'hsmgw_tls_handshake_failures_total', { reason: 'certificate_revoked' }) >= 1);
    assert.ok(await metric(gw, 'hsmgw_tls_crl_next_update_timestamp_seconds', {}) > Date.now() / 1000);
  });

  it('a new CRL revoking a connected certificate closes its connection within seconds (GOAWAY, then close); the others keep signing', async () => {
    const revoked = await signingSession(gw, ids['revoked-later'], spki);
    const kept = await signingSession(gw, ids.stays, spki);
    const t = performance.now();
    replaceFile(crl, await crlPem(devCa, [ids['revoked-at-start'], ids['revoked-later']]));
    await Promise.race([revoked.watch.closed, sleep(5000)]);
    assert.ok(revoked.watch.goawayAt !== undefined && revoked.watch.closedAt !== undefined, 'the revoked connection got GOAWAY and was closed');
    console.log(`# revoked connection: GOAWAY ${Math.round(revoked.watch.goawayAt - t)} ms, closed ${Math.round(revoked.watch.closedAt - t)} ms after the CRL changed`);
    assert.ok(revoked.watch.closedAt - t < 5000);
    const message = randomBytes(32);
    const answer = await rawUnary(kept.session, SIGN_PATH, signRequest(message));
    assert.equal(grpc.status[answer.code], 'OK', 'a certificate the CRL does not list keeps its connection');
    assert.equal(kept.watch.goawayAt, undefined);
    assert.equal(await connects(gw, ids['revoked-later']), false, 'the revoked certificate cannot reconnect');
    assert.equal(await metric(gw, 'hsmgw_connections_closed_total', { reason: 'certificate_revoked' }), 1);
    kept.session.destroy();
  });

  it('after the client CA is replaced, connections whose certificate does not verify against the new one are closed within seconds; the new CA\'s certificates get in', async () => {
    const old = await signingSession(gw, ids.stays, spki);
    const rotated = await createCertificateAuthority('rotated client CA');
    const fromNewCa = await writeIdentity(dir, 'new-ca-client', rotated, { commonName: 'new', uri: [IDENTITIES.dev], usage: 'client' });
    const t = performance.now();
    replaceFile(clientCa, rotated.certPem);
    writePemFile(crl, await crlPem(rotated, []), 0o644);
    await Promise.race([old.watch.closed, sleep(5000)]);
    assert.ok(old.watch.goawayAt !== undefined && old.watch.closedAt !== undefined, 'the old CA\'s connection got GOAWAY and was closed');
    console.log(`# old-CA connection: GOAWAY ${Math.round(old.watch.goawayAt - t)} ms, closed ${Math.round(old.watch.closedAt - t)} ms after the client CA changed`);
    // This raw session, and the grpc-js client's connection from before (same CA).
    assert.ok(await metric(gw, 'hsmgw_connections_closed_total', { reason: 'certificate_untrusted' }) >= 1);
    assert.equal(await connects(gw, ids.stays), false, 'the old CA\'s certificate cannot reconnect');
    const fresh = await signingSession(gw, fromNewCa, spki);
    fresh.session.destroy();
  });
});

describe('limits.maxConnectionAgeMs', () => {
  let gw: TestGateway;
  let spki: Buffer;

  before(async () => {
    gw = await startTestGateway({ limits: { maxConnectionAgeMs: 1500, maxConnectionAgeGraceMs: 500 } });
    spki = (await gw.client().getKey('dev-ec')).publicKey;
  });
  after(async () => { await gw.stop(); });

  it('a connection gets GOAWAY at its maximum age (±10%), a call still open gets the grace, then the connection is closed; a grpc-js client signs across it', async () => {
    const raw = await signingSession(gw, gw.env.pki.clients.dev, spki);
    const t = performance.now();
    new RawSignStream(raw.session).send(signRequest(randomBytes(16))); // keeps a call open past the GOAWAY
    const client = gw.client();
    let signatures = 0;
    while (performance.now() - t < 3000) {
      await client.sign('dev-ec', 'ECDSA_SHA256', randomBytes(32));
      signatures++;
      await sleep(50);
    }
    await Promise.race([raw.watch.closed, sleep(1000)]);
    assert.ok(raw.watch.goawayAt !== undefined, 'GOAWAY at the maximum age');
    const goaway = raw.watch.goawayAt - t;
    assert.ok(goaway > 1000 && goaway < 2200, `GOAWAY after ${Math.round(goaway)} ms`);
    assert.ok(raw.watch.closedAt !== undefined, 'closed after the grace');
    const grace = raw.watch.closedAt - raw.watch.goawayAt;
    assert.ok(grace >= 400 && grace < 1500, `the open call had ${Math.round(grace)} ms of grace`);
    console.log(`# max age: GOAWAY after ${Math.round(goaway)} ms, closed after ${Math.round((raw.watch.closedAt ?? 0) - t)} ms; ${signatures} signatures by a grpc-js client across reconnections`);
  });
});
