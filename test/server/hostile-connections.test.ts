/**
 * Hostile connections: client certificates the gateway must refuse (another CA, expired, not yet
 * valid, wrong extended key usage, key usage without digitalSignature, self-signed, a self-signed
 * impostor of the client CA's name), plaintext on the TLS port, TLS 1.2, stalled handshakes
 * (slowloris) and more connections than limits.maxConnections. Each is refused, and a legitimate
 * client connected before keeps its connection and keeps signing (a verified signature after each
 * attack); where a refusal frees a slot, a client connecting after works too.
 */
import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tls from 'node:tls';
import { KeyObject, randomBytes, webcrypto } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { SignatureAlgorithm, SignerClient, SignRequest, SignResponse } from '../../proto/generated/hsmgateway/v1/signer';
import { createCertificateAuthority, issueLeaf } from '../../server/bootstrap/dev-pki';
import * as x509 from '../../common/x509/x509-library';
import { IDENTITIES, loadDevCa } from '../support/test-environment';
import { startTestGateway, type TestGateway } from '../support/test-gateway';
import { verifySignature } from '../support/signatures';
import { connectRaw, rawUnary, SIGN_PATH } from '../support/raw-grpc';
import { parsePrometheusText, sampleValue, type ParsedMetrics } from '../support/prometheus-text';
import { writePemFile } from '../../common/pem-file';

type X509Crypto = Parameters<typeof x509.cryptoProvider.set>[0];
type X509KeyPair = x509.X509CertificateCreateSelfSignedParams['keys'];

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Identity { cert: string; key: string }

/** A self-signed client certificate carrying the dev identity; `subject` lets it impersonate a CA's name. */
async function selfSigned(dir: string, name: string, subject: string): Promise<Identity> {
  x509.cryptoProvider.set(webcrypto as unknown as X509Crypto);
  const keys = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']) as webcrypto.CryptoKeyPair;
  const notBefore = new Date(Date.now() - 60_000);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    name: subject,
    notBefore,
    notAfter: new Date(notBefore.getTime() + 86_400_000),
    keys: keys as unknown as X509KeyPair,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth], false),
      new x509.SubjectAlternativeNameExtension([{ type: 'url', value: IDENTITIES.dev }], false),
    ],
  });
  const id = { cert: path.join(dir, `${name}.pem`), key: path.join(dir, `${name}.key`) };
  writePemFile(id.cert, cert.toString('pem') + '\n', 0o644);
  writePemFile(id.key, KeyObject.from(keys.privateKey).export({ type: 'pkcs8', format: 'pem' }).toString(), 0o600);
  return id;
}

/**
 * A TLS 1.3 connection to the gateway with this client certificate. In TLS 1.3 the client
 * finishes its side of the handshake first, so acceptance shows as the server's HTTP/2 SETTINGS
 * arriving. Refusal shows as a TLS alert (an error naming it) when OpenSSL itself refuses (no
 * certificate, protocol version), or as a close with no byte when Node refuses a certificate
 * that failed verification (it destroys the socket after the handshake, sending no alert).
 */
interface Probe { accepted: boolean; clientFinished: boolean; error?: string }
function tlsProbe(port: number, ca: Buffer, identity: Identity | undefined, extra: tls.ConnectionOptions = {}): Promise<Probe> {
  return new Promise((resolve) => {
    const socket = tls.connect({
      host: '127.0.0.1', port, ca, servername: 'localhost', ALPNProtocols: ['h2'],
      ...(identity ? { cert: fs.readFileSync(identity.cert), key: fs.readFileSync(identity.key) } : {}),
      ...extra,
    });
    let clientFinished = false;
    let settled = false;
    const done = (r: Omit<Probe, 'clientFinished'>): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ ...r, clientFinished });
    };
    const timer = setTimeout(() => done({ accepted: false, error: 'no answer within 5 s' }), 5000);
    socket.on('secureConnect', () => { clientFinished = true; });
    socket.on('data', () => done({ accepted: true }));
    socket.on('error', (err) => done({ accepted: false, error: err.message }));
    socket.on('end', () => done({ accepted: false, error: 'closed' }));
    socket.on('close', () => done({ accepted: false, error: 'closed' }));
  });
}

/** One Sign call with the generated client; the exact status and, on success, the signature. */
function rawSign(client: SignerClient, message: Buffer): Promise<{ code: number; details: string; signature?: Buffer }> {
  return new Promise((resolve) => {
    client.sign({ key: 'dev-ec', algorithm: SignatureAlgorithm.ECDSA_SHA256, input: { $case: 'message', value: message }, requestId: 1n }, new grpc.Metadata(), { deadline: Date.now() + 5000 },
      (err, res?: SignResponse) => resolve(err ? { code: err.code, details: err.details } : { code: grpc.status.OK, details: '', signature: Buffer.from(res?.signature ?? []) }));
  });
}

/**
 * A legitimate client that connects before the attacks and must stay connected: any connectivity
 * change away from READY is recorded, and each proof is a fresh, verified signature.
 */
class LegitimateClient {
  readonly client: SignerClient;
  readonly transitions: string[] = [];
  private spki: Buffer | undefined;

  constructor(gw: TestGateway) {
    this.client = gw.rawClient('dev');
  }

  async connect(): Promise<void> {
    this.spki = await new Promise<Buffer>((resolve, reject) => {
      this.client.getKey({ key: 'dev-ec' }, (err, info) => (err || !info ? reject(err ?? new Error('no key info')) : resolve(Buffer.from(info.publicKey))));
    });
    await this.proveServing('at start');
    const channel = this.client.getChannel();
    const watch = (state: grpc.connectivityState): void => {
      channel.watchConnectivityState(state, Infinity, () => {
        const next = channel.getConnectivityState(false);
        if (next === grpc.connectivityState.SHUTDOWN) return; // closed by the test
        this.transitions.push(grpc.connectivityState[next]);
        watch(next);
      });
    };
    assert.equal(channel.getConnectivityState(false), grpc.connectivityState.READY);
    watch(grpc.connectivityState.READY);
  }

  async proveServing(when: string): Promise<void> {
    const message = randomBytes(48);
    const r = await rawSign(this.client, message);
    assert.equal(grpc.status[r.code], 'OK', `legitimate client ${when}: ${r.details}`);
    assert.ok(verifySignature(this.spki as Buffer, SignatureAlgorithm.ECDSA_SHA256, message, r.signature as Buffer), `legitimate client ${when}: the signature verifies`);
    assert.deepEqual(this.transitions, [], `legitimate client ${when}: its connection never left READY`);
  }
}

describe('hostile connections are refused without affecting other clients', () => {
  let gw: TestGateway;
  let legit: LegitimateClient;
  let ca: Buffer;
  let dir: string;
  const ids: Record<string, Identity> = {};

  before(async () => {
    // Handshake caps high enough for the slowloris below, which is about the timeout (the caps have their own tests).
    gw = await startTestGateway({ limits: { handshakeTimeoutMs: 500, maxHandshakes: 100, maxHandshakesPerAddress: 100 } });
    ca = fs.readFileSync(gw.env.pki.ca);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hostile-connections-'));
    const devCa = await loadDevCa(path.dirname(gw.env.pki.ca));
    const issue = async (name: string, opts: Partial<Parameters<typeof issueLeaf>[1]>): Promise<void> => {
      const issued = await issueLeaf(devCa, { commonName: name, uri: [IDENTITIES.dev], usage: 'client', ...opts });
      ids[name] = { cert: path.join(dir, `${name}.pem`), key: path.join(dir, `${name}.key`) };
      writePemFile(ids[name].cert, issued.certPem, 0o644);
      writePemFile(ids[name].key, issued.keyPem, 0o600);
    };
    const day = 86_400_000;
    await issue('control', {});
    await issue('not-yet-valid', { notBefore: new Date(Date.now() + day), notAfter: new Date(Date.now() + 30 * day) });
    await issue('expired', { notBefore: new Date(Date.now() - 30 * day), notAfter: new Date(Date.now() - day) });
    await issue('eku-server-only', { usage: 'server' });
    await issue('no-digital-signature', { keyUsage: x509.KeyUsageFlags.keyEncipherment });
    ids['other-ca'] = gw.env.pki.clients.otherCa;
    ids['self-signed'] = await selfSigned(dir, 'self-signed', 'CN=self-signed proxy');
    ids['impostor-of-ca-name'] = await selfSigned(dir, 'impostor', devCa.cert.subject);
    // An intermediate-less chain from a CA the gateway does not trust, but with the same CN as the real one.
    const twin = await createCertificateAuthority(devCa.cert.subject.replace(/^CN=/, ''));
    const twinLeaf = await issueLeaf(twin, { commonName: 'twin', uri: [IDENTITIES.dev], usage: 'client' });
    ids['ca-name-twin'] = { cert: path.join(dir, 'twin.pem'), key: path.join(dir, 'twin.key') };
    writePemFile(ids['ca-name-twin'].cert, twinLeaf.certPem, 0o644);
    writePemFile(ids['ca-name-twin'].key, twinLeaf.keyPem, 0o600);
    legit = new LegitimateClient(gw);
    await legit.connect();
  });
  after(async () => {
    await gw.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('control: a certificate issued the same way, valid and for clientAuth, is accepted (the probe can tell)', async () => {
    assert.deepEqual(await tlsProbe(gw.gateway.grpcPort, ca, ids.control), { accepted: true, clientFinished: true });
  });

  // Certificates that fail verification: the client completes its half of the TLS 1.3 handshake,
  // then the server closes without an alert and without a byte of HTTP/2 (deterministic in Node).
  const refusals = ['other-ca', 'expired', 'not-yet-valid', 'eku-server-only', 'no-digital-signature', 'self-signed', 'impostor-of-ca-name', 'ca-name-twin'];
  for (const name of refusals) {
    it(`${name}: closed right after the handshake with no byte of HTTP/2, gRPC sees UNAVAILABLE, the legitimate client keeps signing`, async () => {
      const probe = await tlsProbe(gw.gateway.grpcPort, ca, ids[name]);
      assert.deepEqual(probe, { accepted: false, clientFinished: true, error: 'closed' }, `${name} must not get in`);
      const id = ids[name];
      const attacker = new SignerClient(gw.endpoint, grpc.credentials.createSsl(ca, fs.readFileSync(id.key), fs.readFileSync(id.cert)));
      try {
        const r = await rawSign(attacker, randomBytes(8));
        assert.equal(grpc.status[r.code], 'UNAVAILABLE', r.details);
      } finally {
        attacker.close();
      }
      await legit.proveServing(`after ${name}`);
    });
  }

  it('no client certificate: refused with "certificate required"', async () => {
    const probe = await tlsProbe(gw.gateway.grpcPort, ca, undefined);
    assert.equal(probe.accepted, false);
    assert.match(probe.error ?? '', /certificate required|alert number 116/);
    await legit.proveServing('after a client without certificate');
  });

  it('TLS 1.2 only: refused with a protocol-version alert', async () => {
    const probe = await tlsProbe(gw.gateway.grpcPort, ca, ids.control, { maxVersion: 'TLSv1.2' });
    assert.equal(probe.accepted, false);
    assert.match(probe.error ?? '', /alert protocol version|alert number 70/);
    await legit.proveServing('after a TLS 1.2 client');
  });

  it('plaintext HTTP/2 and HTTP/1.1 to the TLS port: closed at once, never answered with HTTP', async () => {
    for (const payload of ['PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n']) {
      const started = Date.now();
      const received = await new Promise<Buffer>((resolve, reject) => {
        const chunks: Buffer[] = [];
        const socket = net.connect(gw.gateway.grpcPort, '127.0.0.1', () => socket.write(payload));
        const timer = setTimeout(() => { socket.destroy(); reject(new Error('the plaintext connection was left open')); }, 3000);
        socket.on('data', (d) => chunks.push(d));
        socket.on('error', () => undefined);
        socket.on('close', () => { clearTimeout(timer); resolve(Buffer.concat(chunks)); });
      });
      assert.ok(Date.now() - started < 1000, 'closed without waiting for the handshake timeout');
      // Nothing, or a TLS alert record (content type 21): never HTTP.
      assert.ok(received.length === 0 || received[0] === 0x15, `got ${received.subarray(0, 16).toString('hex')}`);
      assert.doesNotMatch(received.toString('latin1'), /HTTP/);
    }
    const insecure = new SignerClient(gw.endpoint, grpc.credentials.createInsecure());
    try {
      assert.equal(grpc.status[(await rawSign(insecure, randomBytes(8))).code], 'UNAVAILABLE');
    } finally {
      insecure.close();
    }
    await legit.proveServing('after plaintext clients');
  });

  it('slowloris: 60 stalled or trickling handshakes are all dropped after handshakeTimeoutMs (500 ms); clients before and during keep working', async () => {
    const started = Date.now();
    const closedAfter: number[] = [];
    const sockets: net.Socket[] = [];
    // A real ClientHello's first bytes, then nothing (half) or one byte every 100 ms (the other half).
    const hello = Buffer.from('160301020001', 'hex');
    const closes = Array.from({ length: 60 }, (_, i) => new Promise<void>((resolve) => {
      const socket = net.connect(gw.gateway.grpcPort, '127.0.0.1');
      sockets.push(socket);
      let sent = 0;
      let trickle: NodeJS.Timeout | undefined;
      socket.on('connect', () => {
        if (i % 2 === 0) { socket.write(hello.subarray(0, 3)); return; }
        trickle = setInterval(() => { if (!socket.destroyed) socket.write(Buffer.from([sent < hello.length ? hello[sent++] : 0])); }, 100);
      });
      socket.on('error', () => undefined);
      socket.on('close', () => { if (trickle) clearInterval(trickle); closedAfter.push(Date.now() - started); resolve(); });
    }));
    await sleep(150);
    await legit.proveServing('while 60 handshakes stall');
    const during = gw.rawClient('dev');
    const r = await rawSign(during, randomBytes(8));
    assert.equal(grpc.status[r.code], 'OK', 'a new client connects while the stalled handshakes are held');
    const all = Promise.all(closes);
    const guard = sleep(4000).then(() => 'timeout');
    const outcome = await Promise.race([all.then(() => 'closed'), guard]);
    for (const s of sockets) s.destroy();
    assert.equal(outcome, 'closed', `only ${closedAfter.length} of 60 stalled connections were dropped within 4 s`);
    closedAfter.sort((a, b) => a - b);
    assert.ok(closedAfter[0] >= 400, `dropped at ${closedAfter[0]} ms: not before the handshake timeout`);
    assert.ok(closedAfter[closedAfter.length - 1] < 2500, `the last was dropped at ${closedAfter[closedAfter.length - 1]} ms`);
    console.log(`# slowloris: 60 stalled handshakes dropped between ${closedAfter[0]} and ${closedAfter[closedAfter.length - 1]} ms`);
    await legit.proveServing('after the slowloris');
  });
});

describe('limits.maxConnections', () => {
  const MAX = 5;
  let gw: TestGateway;
  let legit: LegitimateClient;
  let ca: Buffer;
  const held: tls.TLSSocket[] = [];

  before(async () => {
    gw = await startTestGateway({ limits: { maxConnections: MAX, handshakeTimeoutMs: 500 } });
    ca = fs.readFileSync(gw.env.pki.ca);
    legit = new LegitimateClient(gw);
    await legit.connect();
  });
  after(async () => {
    for (const s of held) s.destroy();
    await gw.stop();
  });

  /** A completed mTLS connection (valid certificate) that is then just held open. */
  function hold(): Promise<tls.TLSSocket> {
    return new Promise((resolve, reject) => {
      const dev = gw.env.pki.clients.dev;
      const socket = tls.connect({ host: '127.0.0.1', port: gw.gateway.grpcPort, ca, servername: 'localhost', ALPNProtocols: ['h2'], cert: fs.readFileSync(dev.cert), key: fs.readFileSync(dev.key) });
      socket.once('data', () => resolve(socket));
      socket.on('error', reject);
      held.push(socket);
    });
  }

  it(`beyond ${MAX} connections the next is dropped before any TLS byte; the legitimate client keeps signing; a slot freed lets a new client in`, async () => {
    for (let i = 1; i < MAX; i++) await hold(); // the legitimate client's connection + 4 = MAX
    for (let attempt = 0; attempt < 3; attempt++) {
      const extra = await new Promise<{ bytes: number; error?: string }>((resolve) => {
        let bytes = 0;
        const socket = tls.connect({ host: '127.0.0.1', port: gw.gateway.grpcPort, ca, servername: 'localhost', cert: fs.readFileSync(gw.env.pki.clients.dev.cert), key: fs.readFileSync(gw.env.pki.clients.dev.key) });
        const timer = setTimeout(() => { socket.destroy(); resolve({ bytes, error: 'left open' }); }, 3000);
        socket.on('data', (d) => { bytes += d.length; });
        socket.on('error', (err) => { clearTimeout(timer); resolve({ bytes, error: err.message }); });
        socket.on('close', () => { clearTimeout(timer); resolve({ bytes, error: 'closed' }); });
      });
      assert.equal(extra.bytes, 0);
      assert.match(extra.error ?? '', /ECONNRESET|socket disconnected before secure TLS connection was established|closed/, `connection ${MAX + 1} must be dropped: ${extra.error}`);
    }
    const refused = gw.rawClient('dev');
    assert.equal(grpc.status[(await rawSign(refused, randomBytes(8))).code], 'UNAVAILABLE', 'a gRPC client beyond the cap is refused');
    refused.close();
    await legit.proveServing('with the connection cap reached');

    held.pop()?.destroy();
    held.pop()?.destroy();
    await sleep(100);
    const after = gw.rawClient('dev');
    const r = await rawSign(after, randomBytes(8));
    assert.equal(grpc.status[r.code], 'OK', `a client connecting after slots were freed: ${r.details}`);
    after.close();
    await legit.proveServing('after the cap was released');
  });

  it('stalled handshakes filling every slot block new clients only until handshakeTimeoutMs drops them', async () => {
    for (const s of held.splice(0)) s.destroy();
    await sleep(100);
    const stalled = Array.from({ length: MAX }, () => {
      const s = net.connect(gw.gateway.grpcPort, '127.0.0.1');
      s.on('error', () => undefined);
      return s;
    });
    await sleep(100);
    const t = Date.now();
    await legit.proveServing('while stalled handshakes hold the free slots');
    // A new client retries until a slot frees: the stalled ones go at 500 ms.
    let code = -1;
    while (Date.now() - t < 4000) {
      const c = gw.rawClient('dev');
      code = (await rawSign(c, randomBytes(8))).code;
      c.close();
      if (code === grpc.status.OK) break;
      await sleep(100);
    }
    for (const s of stalled) s.destroy();
    assert.equal(grpc.status[code], 'OK', 'a new client got in once the stalled handshakes were dropped');
    assert.ok(Date.now() - t < 3000, `within ${Date.now() - t} ms`);
    await legit.proveServing('after the stalled handshakes');
  });
});

/**
 * Connections that never finish their TLS handshake cannot lock proxies out: they have their own
 * cap (limits.maxHandshakes), smaller than limits.maxConnections, and one per source address
 * (limits.maxHandshakesPerAddress), and a short default timeout. 127.0.0.2 and 127.0.0.3 (and
 * 127.0.1.x) are other source addresses on the Linux loopback.
 */
describe('idle sockets before the handshake', () => {
  const MAX_CONNECTIONS = 200;
  let gw: TestGateway;
  let legit: LegitimateClient;
  let spki: Buffer;

  before(async () => {
    gw = await startTestGateway({ limits: { maxConnections: MAX_CONNECTIONS } });
    legit = new LegitimateClient(gw);
    await legit.connect();
    spki = (await gw.client().getKey('dev-ec')).publicKey;
  });
  after(async () => { await gw.stop(); });

  const metrics = async (): Promise<ParsedMetrics> => parsePrometheusText(await (await fetch(gw.metricsUrl)).text());

  /** Holds `count` idle TCP connections from each source address, opening a new one whenever one is closed, until stopped. */
  function flood(sources: string[], count: number): { stop(): void; opened(): number } {
    let stopped = false;
    let opened = 0;
    const sockets = new Set<net.Socket>();
    const open = (localAddress: string): void => {
      if (stopped) return;
      opened++;
      const socket = net.connect({ host: '127.0.0.1', port: gw.gateway.grpcPort, localAddress });
      sockets.add(socket);
      socket.on('error', () => undefined);
      socket.on('close', () => { sockets.delete(socket); setTimeout(() => open(localAddress), 5); });
    };
    for (const source of sources) for (let i = 0; i < count; i++) open(source);
    return {
      stop() { stopped = true; for (const s of sockets) s.destroy(); },
      opened: () => opened,
    };
  }

  /** A proxy on 127.0.0.2 connects afresh (a full TLS handshake) and signs; true when the signature verifies. */
  async function proxyFrom127002Signs(): Promise<boolean> {
    const session = await connectRaw({ port: gw.gateway.grpcPort, ca: gw.env.pki.ca, identity: gw.env.pki.clients.dev, localAddress: '127.0.0.2' });
    try {
      const message = randomBytes(32);
      const req = SignRequest.encode({ key: 'dev-ec', algorithm: SignatureAlgorithm.ECDSA_SHA256, input: { $case: 'message', value: message }, requestId: 1n }).finish();
      const answer = await rawUnary(session, SIGN_PATH, req);
      assert.equal(grpc.status[answer.code], 'OK', answer.details);
      return verifySignature(spki, SignatureAlgorithm.ECDSA_SHA256, message, Buffer.from(SignResponse.decode(answer.messages[0]).signature));
    } finally {
      session.destroy();
    }
  }

  it(`maxConnections ${MAX_CONNECTIONS}: 400 idle sockets from 127.0.0.3, reopened as soon as they are dropped, while a proxy connecting from 127.0.0.2 keeps signing`, async () => {
    const attack = flood(['127.0.0.3'], 400);
    try {
      await sleep(300);
      const started = Date.now();
      let signatures = 0;
      while (Date.now() - started < 4000) {
        assert.ok(await proxyFrom127002Signs(), 'the proxy on 127.0.0.2 connects and its signature verifies');
        signatures++;
      }
      await legit.proveServing('during the flood');
      const m = await metrics();
      const refused = sampleValue(m, 'hsmgw_connections_refused_total', { reason: 'max_handshakes_per_address' });
      const inProgress = sampleValue(m, 'hsmgw_tls_handshakes_in_progress', {});
      console.log(`# handshake flood: ${attack.opened()} sockets opened from 127.0.0.3, ${refused} refused at accept; ${inProgress} handshakes in progress; ${signatures} fresh connections from 127.0.0.2 signed`);
      assert.ok(signatures >= 10, `${signatures} signatures`);
      assert.ok(refused >= 400 - 16, `${refused} refused for the per-address cap`);
      assert.ok(inProgress <= 16 + 1, `${inProgress} handshakes in progress`);
      assert.equal(sampleValue(m, 'hsmgw_connections_refused_total', { reason: 'max_connections' }), 0, 'the connection cap was never reached');
    } finally {
      attack.stop();
    }
  });

  it('stalled handshakes from 20 addresses fill every handshake slot: connected proxies keep signing, the refusals are counted', async () => {
    const sources = Array.from({ length: 20 }, (_, i) => `127.0.1.${i + 1}`);
    const attack = flood(sources, 16);
    try {
      await sleep(500);
      for (let i = 0; i < 5; i++) await legit.proveServing(`with every handshake slot taken (${i})`);
      const m = await metrics();
      const maxHandshakes = gw.config.limits.maxHandshakes;
      assert.equal(maxHandshakes, 100, 'default: half of maxConnections');
      assert.ok(sampleValue(m, 'hsmgw_tls_handshakes_in_progress', {}) <= maxHandshakes);
      assert.ok(sampleValue(m, 'hsmgw_connections_refused_total', { reason: 'max_handshakes' }) > 0);
      assert.ok(sampleValue(m, 'hsmgw_tls_connections', {}) >= 1, 'the proxy connected before is counted as connected, not as a handshake');
    } finally {
      attack.stop();
    }
  });
});
