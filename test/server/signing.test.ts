import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { createHash, randomBytes, createPublicKey, verify } from 'node:crypto';
import { SignatureAlgorithm } from '../../proto/generated/hsmgateway/v1/signer';
import { startTestGateway, type TestGateway } from '../support/test-gateway';
import { digestFor, verifySignature } from '../support/signatures';

const RSA_ALGORITHMS = [
  SignatureAlgorithm.RSA_PKCS1_SHA256, SignatureAlgorithm.RSA_PKCS1_SHA384, SignatureAlgorithm.RSA_PKCS1_SHA512,
  SignatureAlgorithm.RSA_PSS_SHA256, SignatureAlgorithm.RSA_PSS_SHA384, SignatureAlgorithm.RSA_PSS_SHA512,
];
const EC_ALGORITHMS = [SignatureAlgorithm.ECDSA_SHA256, SignatureAlgorithm.ECDSA_SHA384, SignatureAlgorithm.ECDSA_SHA512];

const KEYS: ReadonlyArray<{ name: string; type: string; bits: number; curve: string; algorithms: SignatureAlgorithm[] }> = [
  { name: 'dev-rsa', type: 'RSA', bits: 2048, curve: '', algorithms: RSA_ALGORITHMS },
  { name: 'test-rsa3072', type: 'RSA', bits: 3072, curve: '', algorithms: RSA_ALGORITHMS },
  { name: 'dev-ec', type: 'EC', bits: 256, curve: 'P-256', algorithms: EC_ALGORITHMS },
  { name: 'test-ec384', type: 'EC', bits: 384, curve: 'P-384', algorithms: EC_ALGORITHMS },
];

describe('signing with every algorithm SoftHSM offers, verified with node:crypto', () => {
  let gw: TestGateway;
  before(async () => { gw = await startTestGateway(); });
  after(async () => { await gw.stop(); });

  for (const key of KEYS) {
    it(`GetKey describes ${key.name} with a public key matching the token`, async () => {
      const info = await gw.client().getKey(key.name);
      assert.equal(info.name, key.name);
      assert.equal(info.type, key.type);
      assert.equal(info.bits, key.bits);
      assert.equal(info.curve, key.curve);
      assert.deepEqual(info.algorithms, key.algorithms.map((a) => SignatureAlgorithm[a]));
      const pub = createPublicKey({ key: info.publicKey, format: 'der', type: 'spki' });
      assert.equal(pub.asymmetricKeyType, key.type === 'RSA' ? 'rsa' : 'ec');
    });

    for (const algorithm of key.algorithms) {
      it(`${key.name} ${SignatureAlgorithm[algorithm]}: digest and message inputs both verify`, async () => {
        const client = gw.client();
        const { publicKey } = await client.getKey(key.name);
        const message = randomBytes(100 + algorithm);
        const fromDigest = await client.sign(key.name, algorithm, digestFor(algorithm, message));
        assert.ok(verifySignature(publicKey, algorithm, message, fromDigest), 'signature over the digest must verify');
        const fromMessage = await client.signMessage(key.name, algorithm, message);
        assert.ok(verifySignature(publicKey, algorithm, message, fromMessage), 'signature over the message must verify');
        // A signature never verifies for other data: the check above is not vacuous.
        assert.equal(verifySignature(publicKey, algorithm, Buffer.concat([message, Buffer.from([0])]), fromDigest), false);
      });
    }
  }

  it('returns the self-signed certificate stored on the token with the key, leaf first', async () => {
    const { X509Certificate } = await import('node:crypto');
    for (const name of ['dev-ec', 'dev-rsa']) {
      const info = await gw.client().getKey(name);
      assert.equal(info.certificateChain.length, 1);
      const cert = new X509Certificate(info.certificateChain[0]);
      assert.ok(cert.publicKey.export({ type: 'spki', format: 'der' }).equals(info.publicKey));
      assert.ok(cert.verify(cert.publicKey), 'the HSM key signed its own certificate');
      assert.match(cert.subjectAltName ?? '', /DNS:localhost/);
      assert.match(cert.subjectAltName ?? '', /IP Address:127\.0\.0\.1/);
    }
  });

  it('why a rule cannot restrict ECDSA to one hash (config refuses it): a SHA-384 digest cut to 32 bytes, sent as ECDSA_SHA256, is a valid ECDSA-with-SHA-384 signature on P-256', async () => {
    const client = gw.client();
    const { publicKey } = await client.getKey('dev-ec');
    const message = randomBytes(64);
    const truncated = createHash('sha384').update(message).digest().subarray(0, 32);
    const signature = await client.sign('dev-ec', SignatureAlgorithm.ECDSA_SHA256, truncated);
    assert.ok(verify('sha384', message, createPublicKey({ key: publicKey, format: 'der', type: 'spki' }), signature));
  });

  it('ECDSA signatures are DER, not raw r||s', async () => {
    const sig = await gw.client().sign('dev-ec', SignatureAlgorithm.ECDSA_SHA256, randomBytes(32));
    assert.equal(sig[0], 0x30);
    assert.equal(sig[1], sig.length - 2);
  });
});
