import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { status } from '@grpc/grpc-js';
import { SignatureAlgorithm, type SignRequest, type SignResponse } from '../../proto/generated/hsmgateway/v1/signer';
import { GatewayClientError } from '../../client/gateway-client-error';
import { startTestGateway, type TestGateway } from '../support/test-gateway';
import { verifySignature } from '../support/signatures';
import { createHash } from 'node:crypto';

/** Opens a SignStream, writes every request at once, half-closes, and collects the answers in arrival order. */
function runStream(gw: TestGateway, requests: SignRequest[]): Promise<SignResponse[]> {
  const call = gw.rawClient().signStream();
  const answers: SignResponse[] = [];
  return new Promise((resolve, reject) => {
    call.on('data', (r: SignResponse) => answers.push(r));
    call.on('error', reject);
    call.on('end', () => resolve(answers));
    for (const r of requests) call.write(r);
    call.end();
  });
}

describe('SignStream', () => {
  let gw: TestGateway;
  let keys: Record<string, Buffer>;
  before(async () => {
    gw = await startTestGateway();
    const client = gw.client();
    keys = { 'dev-ec': (await client.getKey('dev-ec')).publicKey, 'test-rsa3072': (await client.getKey('test-rsa3072')).publicKey };
  });
  after(async () => { await gw.stop(); });

  it('500 concurrent requests on one stream: all answered once, out of order, per-request errors keep the stream open', async () => {
    const messages = new Map<bigint, Buffer>();
    const requests: SignRequest[] = [];
    for (let i = 0; i < 500; i++) {
      const requestId = BigInt(i) * 1_000_003n + 2n ** 60n; // beyond 2^53: must survive as uint64
      const message = randomBytes(64);
      messages.set(requestId, message);
      if (i % 50 === 7) {
        // A malformed request in the middle: wrong digest length.
        requests.push({ key: 'dev-ec', algorithm: SignatureAlgorithm.ECDSA_SHA256, input: { $case: 'digest', value: randomBytes(20) }, requestId });
      } else if (i % 50 === 8) {
        requests.push({ key: 'not-allowed', algorithm: SignatureAlgorithm.ECDSA_SHA256, input: { $case: 'digest', value: randomBytes(32) }, requestId });
      } else {
        // Slow RSA-3072 first, fast ECDSA after: answers overtake requests.
        const rsa = i % 4 === 0;
        const algorithm = rsa ? SignatureAlgorithm.RSA_PSS_SHA256 : SignatureAlgorithm.ECDSA_SHA256;
        requests.push({ key: rsa ? 'test-rsa3072' : 'dev-ec', algorithm, input: { $case: 'digest', value: createHash('sha256').update(message).digest() }, requestId });
      }
    }
    const answers = await runStream(gw, requests);
    assert.equal(answers.length, 500);
    assert.deepEqual(new Set(answers.map((a) => a.requestId)), new Set(requests.map((r) => r.requestId)), 'every request_id answered exactly once');
    const byId = new Map(requests.map((r) => [r.requestId, r]));
    let failures = 0;
    for (const a of answers) {
      const req = byId.get(a.requestId) as SignRequest;
      if (req.key === 'not-allowed') {
        assert.equal(a.errorCode, status.PERMISSION_DENIED);
        failures++;
      } else if (req.input?.value.length === 20) {
        assert.equal(a.errorCode, status.INVALID_ARGUMENT);
        assert.match(a.errorMessage, /32 bytes/);
        failures++;
      } else {
        assert.equal(a.errorCode, 0, a.errorMessage);
        assert.ok(verifySignature(keys[req.key], req.algorithm, messages.get(a.requestId) as Buffer, Buffer.from(a.signature)), `signature ${a.requestId} verifies`);
      }
    }
    assert.equal(failures, 20);
    const arrival = answers.map((a) => a.requestId);
    const sent = requests.map((r) => r.requestId);
    assert.notDeepEqual(arrival, sent, 'answers must be able to come back out of order');
  });

  it('the stream stays usable after errors: interleaved good and bad requests on a long-lived stream', async () => {
    const call = gw.rawClient().signStream();
    const answers: SignResponse[] = [];
    const done = new Promise<void>((resolve, reject) => {
      call.on('data', (r: SignResponse) => answers.push(r));
      call.on('error', reject);
      call.on('end', resolve);
    });
    for (let i = 0; i < 10; i++) {
      call.write({ key: 'dev-ec', algorithm: i % 2 ? 0 : SignatureAlgorithm.ECDSA_SHA256, input: { $case: 'digest', value: randomBytes(32) }, requestId: BigInt(i) });
      await new Promise((r) => setTimeout(r, 5));
    }
    call.end();
    await done;
    assert.equal(answers.length, 10);
    for (const a of answers) assert.equal(a.errorCode, Number(a.requestId) % 2 ? status.INVALID_ARGUMENT : 0);
  });
});

describe('SignStream in-flight cap', () => {
  it('requests beyond limits.maxStreamInFlight get RESOURCE_EXHAUSTED answers, the rest succeed', async () => {
    const gw = await startTestGateway({ limits: { maxStreamInFlight: 8 }, pkcs11: { sessions: { min: 1, max: 1 } } });
    try {
      const requests: SignRequest[] = Array.from({ length: 60 }, (_, i) => ({ key: 'test-rsa3072', algorithm: SignatureAlgorithm.RSA_PKCS1_SHA256, input: { $case: 'digest' as const, value: randomBytes(32) }, requestId: BigInt(i) }));
      const answers = await runStream(gw, requests);
      assert.equal(answers.length, 60);
      const codes = new Set(answers.map((a) => a.errorCode));
      assert.deepEqual([...codes].sort(), [0, status.RESOURCE_EXHAUSTED]);
    } finally {
      await gw.stop();
    }
  });
});

describe('a SignStream ended by a gateway shutdown', () => {
  it('the client retires the stream on its final status: a request sent just after it fails over at once (UNAVAILABLE), not at its deadline', async () => {
    // A long grace period: the gateway keeps the connection while it drains, so a request
    // written on the finished stream would wait for its deadline (DEADLINE_EXCEEDED).
    const gw = await startTestGateway({ shutdown: { graceMs: 20_000 } });
    const client = gw.client('dev', { deadlineMs: 5000 });
    let stopping: Promise<void> | undefined;
    try {
      const digest = randomBytes(32);
      assert.ok((await client.signStreamed('dev-ec', 'ECDSA_SHA256', digest)).length > 0, 'the stream is open and serving');
      stopping = gw.gateway.stop();
      // The drain ends the idle stream with its final status right away; give it time to arrive.
      await new Promise((r) => setTimeout(r, 300));
      const late = await client.signStreamed('dev-ec', 'ECDSA_SHA256', digest).then(() => undefined, (e: GatewayClientError) => e);
      assert.ok(late instanceof GatewayClientError, 'a stopping gateway signed nothing new');
      assert.equal(late.codeName, 'UNAVAILABLE', late.details);
    } finally {
      client.close();
      await (stopping ?? gw.stop());
    }
  });
});
