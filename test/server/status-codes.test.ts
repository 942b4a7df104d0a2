import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as tls from 'node:tls';
import { randomBytes } from 'node:crypto';
import { credentials, status, Metadata } from '@grpc/grpc-js';
import { SignatureAlgorithm, SignerClient, type SignRequest } from '../../proto/generated/hsmgateway/v1/signer';
import { GatewayClientError } from '../../client/gateway-client-error';
import { startTestGateway, type TestGateway } from '../support/test-gateway';
import { parsePrometheusText, sampleValue } from '../support/prometheus-text';

/** Sends a raw SignRequest and returns the exact gRPC status code and message. */
function rawSign(gw: TestGateway, req: Partial<SignRequest>, identity: Parameters<TestGateway['rawClient']>[0] = 'dev'): Promise<{ code: number; details: string }> {
  const client = gw.rawClient(identity);
  const full: SignRequest = { key: '', algorithm: 0, input: undefined, requestId: 0n, ...req };
  return new Promise((resolve) => {
    client.sign(full, new Metadata(), { deadline: Date.now() + 10_000 }, (err) => resolve(err ? { code: err.code, details: err.details } : { code: status.OK, details: '' }));
  });
}

async function expectCode(promise: Promise<unknown>, code: status, pattern?: RegExp): Promise<GatewayClientError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof GatewayClientError, `expected GatewayClientError, got ${String(err)}`);
    assert.equal(err.codeName, status[code], err.message);
    if (pattern) assert.match(err.details, pattern);
    return err;
  }
  assert.fail(`expected ${status[code]}, the call succeeded`);
}

describe('status codes', () => {
  let gw: TestGateway;
  before(async () => { gw = await startTestGateway({ limits: { maxMessageBytes: 1024 } }); });
  after(async () => { await gw.stop(); });

  describe('INVALID_ARGUMENT for malformed input', () => {
    const digest32 = randomBytes(32);
    const cases: Array<[string, Partial<SignRequest>, RegExp]> = [
      ['digest too short for SHA-256', { key: 'dev-ec', algorithm: SignatureAlgorithm.ECDSA_SHA256, input: { $case: 'digest', value: randomBytes(31) } }, /32 bytes/],
      ['SHA-256 digest given for SHA-384', { key: 'dev-ec', algorithm: SignatureAlgorithm.ECDSA_SHA384, input: { $case: 'digest', value: digest32 } }, /48 bytes/],
      ['SHA-256 digest given for RSA_PSS_SHA512', { key: 'dev-rsa', algorithm: SignatureAlgorithm.RSA_PSS_SHA512, input: { $case: 'digest', value: digest32 } }, /64 bytes/],
      ['empty digest', { key: 'dev-rsa', algorithm: SignatureAlgorithm.RSA_PKCS1_SHA256, input: { $case: 'digest', value: Buffer.alloc(0) } }, /32 bytes/],
      ['unspecified algorithm', { key: 'dev-ec', algorithm: 0, input: { $case: 'digest', value: digest32 } }, /algorithm is required/],
      ['unknown algorithm value', { key: 'dev-ec', algorithm: 77 as SignatureAlgorithm, input: { $case: 'digest', value: digest32 } }, /unknown algorithm 77/],
      ['RSA algorithm on an EC key', { key: 'dev-ec', algorithm: SignatureAlgorithm.RSA_PSS_SHA256, input: { $case: 'digest', value: digest32 } }, /does not fit key "dev-ec"/],
      ['ECDSA on an RSA key', { key: 'dev-rsa', algorithm: SignatureAlgorithm.ECDSA_SHA256, input: { $case: 'digest', value: digest32 } }, /does not fit/],
      ['ED25519 on an EC key', { key: 'dev-ec', algorithm: SignatureAlgorithm.ED25519, input: { $case: 'message', value: digest32 } }, /does not fit/],
      ['no input', { key: 'dev-ec', algorithm: SignatureAlgorithm.ECDSA_SHA256 }, /digest or message is required/],
      ['message over the cap', { key: 'dev-ec', algorithm: SignatureAlgorithm.ECDSA_SHA256, input: { $case: 'message', value: randomBytes(1025) } }, /limit is 1024/],
      ['empty key name', { key: '', algorithm: SignatureAlgorithm.ECDSA_SHA256, input: { $case: 'digest', value: digest32 } }, /key is required/],
      ['key name with a path', { key: '../dev-ec', algorithm: SignatureAlgorithm.ECDSA_SHA256, input: { $case: 'digest', value: digest32 } }, /key name must be/],
      ['key name with NUL', { key: 'dev-ec\u0000', algorithm: SignatureAlgorithm.ECDSA_SHA256, input: { $case: 'digest', value: digest32 } }, /key name must be/],
    ];
    for (const [name, req, pattern] of cases) {
      it(name, async () => {
        const r = await rawSign(gw, req);
        assert.equal(r.code, status.INVALID_ARGUMENT, r.details);
        assert.match(r.details, pattern);
      });
    }

    it('a message exactly at the cap is accepted', async () => {
      const r = await rawSign(gw, { key: 'dev-ec', algorithm: SignatureAlgorithm.ECDSA_SHA256, input: { $case: 'message', value: randomBytes(1024) } });
      assert.equal(r.code, status.OK, r.details);
    });
  });

  describe('authorization (deny by default)', () => {
    it('an identity without any rule gets PERMISSION_DENIED', async () => {
      await expectCode(gw.client('nobody').sign('dev-ec', 'ECDSA_SHA256', randomBytes(32)), status.PERMISSION_DENIED, /may not use key "dev-ec"/);
      await expectCode(gw.client('nobody').getKey('dev-ec'), status.PERMISSION_DENIED);
      assert.deepEqual(await gw.client('nobody').listKeys(), []);
    });

    it('an identity allowed one key asking for another gets PERMISSION_DENIED', async () => {
      const pssOnly = gw.client('pssOnly');
      await pssOnly.sign('dev-rsa', 'RSA_PSS_SHA256', randomBytes(32));
      await expectCode(pssOnly.sign('dev-ec', 'ECDSA_SHA256', randomBytes(32)), status.PERMISSION_DENIED, /may not use key "dev-ec"/);
      assert.deepEqual((await pssOnly.listKeys()).map((k) => k.name), ['dev-rsa']);
    });

    it('an algorithm outside the rule gets PERMISSION_DENIED, and GetKey lists only the allowed ones', async () => {
      const pssOnly = gw.client('pssOnly');
      await expectCode(pssOnly.sign('dev-rsa', 'RSA_PSS_SHA384', randomBytes(48)), status.PERMISSION_DENIED, /may not use RSA_PSS_SHA384/);
      assert.deepEqual((await pssOnly.getKey('dev-rsa')).algorithms, ['RSA_PSS_SHA256']);
    });

    it('PERMISSION_DENIED never reveals whether a key exists', async () => {
      const existing = await expectCode(gw.client('pssOnly').sign('test-ec384', 'ECDSA_SHA384', randomBytes(48)), status.PERMISSION_DENIED);
      const missing = await expectCode(gw.client('pssOnly').sign('test-ec999', 'ECDSA_SHA384', randomBytes(48)), status.PERMISSION_DENIED);
      assert.equal(existing.details.replace('test-ec384', 'X'), missing.details.replace('test-ec999', 'X'));
    });

    it('NOT_FOUND for an unknown key the caller may otherwise ask about (wildcard rule)', async () => {
      const wild = gw.client('wildcard');
      await expectCode(wild.sign('test-missing', 'ECDSA_SHA256', randomBytes(32)), status.NOT_FOUND, /no key named "test-missing"/);
      await expectCode(wild.getKey('test-missing'), status.NOT_FOUND);
      assert.deepEqual((await wild.listKeys()).map((k) => k.name).sort(), ['test-ec384', 'test-rsa3072']);
      await expectCode(wild.sign('dev-ec', 'ECDSA_SHA256', randomBytes(32)), status.PERMISSION_DENIED);
    });

    it('a SAN DNS identity is used when there is no SAN URI', async () => {
      const dns = gw.client('dnsOnly');
      assert.deepEqual((await dns.listKeys()).map((k) => k.name), ['dev-rsa']);
    });

    it('a client certificate from another CA fails the TLS handshake (UNAVAILABLE)', async () => {
      await expectCode(gw.client('otherCa').sign('dev-ec', 'ECDSA_SHA256', randomBytes(32)), status.UNAVAILABLE);
    });

    it('an expired client certificate fails the TLS handshake (UNAVAILABLE)', async () => {
      await expectCode(gw.client('expired').sign('dev-ec', 'ECDSA_SHA256', randomBytes(32)), status.UNAVAILABLE);
    });

    it('no client certificate: the call fails with UNAVAILABLE and the TLS alert says why', async () => {
      const client = new SignerClient(gw.endpoint, credentials.createSsl(fs.readFileSync(gw.env.pki.ca)));
      const err = await new Promise<{ code: number; details: string }>((resolve) => {
        client.sign({ key: 'dev-ec', algorithm: SignatureAlgorithm.ECDSA_SHA256, input: { $case: 'digest', value: randomBytes(32) }, requestId: 0n }, new Metadata(), { deadline: Date.now() + 5000 }, (e) => resolve(e ? { code: e.code, details: e.details } : { code: 0, details: '' }));
      });
      client.close();
      assert.equal(err.code, status.UNAVAILABLE);
      assert.match(err.details, /certificate required|alert number 116/i);
    });

    it('TLS 1.2 is refused: TLS 1.3 only', async () => {
      const err = await new Promise<Error | undefined>((resolve) => {
        const socket = tls.connect({
          host: '127.0.0.1', port: gw.gateway.grpcPort, ca: fs.readFileSync(gw.env.pki.ca), servername: 'localhost',
          cert: fs.readFileSync(gw.env.pki.clients.dev.cert), key: fs.readFileSync(gw.env.pki.clients.dev.key), maxVersion: 'TLSv1.2',
        });
        socket.on('secureConnect', () => { socket.destroy(); resolve(undefined); });
        socket.on('error', resolve);
      });
      assert.ok(err, 'a TLS 1.2 handshake must not complete');
      assert.match(err.message, /protocol version|alert/i);
    });
  });

  it('refused handshakes are counted by reason in /metrics', async () => {
    const m = parsePrometheusText(await (await fetch(gw.metricsUrl)).text());
    const reasons = m.samples.filter((x) => x.name === 'hsmgw_tls_handshake_failures_total').map((x) => `${x.labels.reason}=${x.value}`);
    assert.ok(sampleValue(m, 'hsmgw_tls_handshake_failures_total', { reason: 'protocol_version' }) >= 1, reasons.join(','));
    assert.ok(sampleValue(m, 'hsmgw_tls_handshake_failures_total', { reason: 'no_client_certificate' }) >= 1, reasons.join(','));
  });

  it('after all those refusals the gateway still serves valid requests', async () => {
    const r = await rawSign(gw, { key: 'dev-rsa', algorithm: SignatureAlgorithm.RSA_PKCS1_SHA256, input: { $case: 'digest', value: randomBytes(32) } });
    assert.equal(r.code, status.OK, r.details);
  });
});

describe('limits', () => {
  it('RESOURCE_EXHAUSTED beyond the in-flight limit', async () => {
    const gw = await startTestGateway({ limits: { maxInFlight: 4 }, pkcs11: { sessions: { min: 1, max: 1 } } });
    try {
      const client = gw.client();
      const results = await Promise.allSettled(Array.from({ length: 40 }, () => client.sign('test-rsa3072', 'RSA_PSS_SHA256', randomBytes(32))));
      const codes = results.map((r) => (r.status === 'fulfilled' ? 'OK' : (r.reason as GatewayClientError).codeName));
      assert.ok(codes.includes('OK'), `some requests must pass: ${codes.join(',')}`);
      assert.ok(codes.includes('RESOURCE_EXHAUSTED'), `some requests must be refused: ${codes.join(',')}`);
      assert.deepEqual([...new Set(codes)].sort(), ['OK', 'RESOURCE_EXHAUSTED']);
      const refused = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
      assert.match((refused.reason as GatewayClientError).details, /limit of 4 requests in flight/);
    } finally {
      await gw.stop();
    }
  });

  it('RESOURCE_EXHAUSTED when too many requests wait for a session', async () => {
    const gw = await startTestGateway({ pkcs11: { sessions: { min: 1, max: 1, maxWaiting: 2 } } });
    try {
      const client = gw.client();
      const results = await Promise.allSettled(Array.from({ length: 30 }, () => client.sign('test-rsa3072', 'RSA_PSS_SHA256', randomBytes(32))));
      const refused = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      assert.ok(refused.length > 0);
      for (const r of refused) {
        assert.equal((r.reason as GatewayClientError).codeName, 'RESOURCE_EXHAUSTED');
        assert.match((r.reason as GatewayClientError).details, /too many requests waiting for an HSM session \(limit 2\)/);
      }
    } finally {
      await gw.stop();
    }
  });

  it('DEADLINE_EXCEEDED for a request whose deadline has already passed', async () => {
    const gw = await startTestGateway();
    try {
      const client = gw.rawClient();
      const code = await new Promise<number>((resolve) => {
        client.sign({ key: 'dev-ec', algorithm: SignatureAlgorithm.ECDSA_SHA256, input: { $case: 'digest', value: randomBytes(32) }, requestId: 0n }, new Metadata(), { deadline: Date.now() - 1 }, (err) => resolve(err ? err.code : 0));
      });
      assert.equal(code, status.DEADLINE_EXCEEDED);
    } finally {
      await gw.stop();
    }
  });
});
