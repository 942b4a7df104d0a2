import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Metadata, status } from '@grpc/grpc-js';
import { SignatureAlgorithm } from '../../proto/generated/hsmgateway/v1/signer';
import { GatewayClientError } from '../../client/gateway-client-error';
import { FaultController } from '../faulty-pkcs11/faulty-module';
import { startFaultyGateway, startTestGateway, type TestGateway } from '../support/test-gateway';
import { verifySignature, digestFor } from '../support/signatures';

describe('session pool under load', () => {
  it('concurrency far above the pool size completes, every signature verifies', async () => {
    const gw = await startTestGateway({ pkcs11: { sessions: { min: 1, max: 2 }, signThreads: 2 } });
    try {
      const client = gw.client();
      const { publicKey } = await client.getKey('dev-ec');
      const messages = Array.from({ length: 300 }, () => randomBytes(32));
      const sigs = await Promise.all(messages.map((m) => client.sign('dev-ec', 'ECDSA_SHA256', digestFor(SignatureAlgorithm.ECDSA_SHA256, m))));
      sigs.forEach((s, i) => assert.ok(verifySignature(publicKey, SignatureAlgorithm.ECDSA_SHA256, messages[i], s)));
      assert.ok(gw.gateway.hsm.poolStats.size <= 2, `pool grew to ${gw.gateway.hsm.poolStats.size}`);
    } finally {
      await gw.stop();
    }
  });
});

describe('session pool', () => {
  const faults = new FaultController();
  let gw: TestGateway;
  before(async () => {
    // No periodic health check: its C_GetSessionInfo must not consume the injected faults.
    gw = await startFaultyGateway(faults, { pkcs11: { sessions: { min: 1, max: 2, acquireTimeoutMs: 100, validateAfterIdleMs: 0 }, signThreads: 2, healthCheckIntervalMs: 600_000 } });
  });
  after(async () => {
    await gw.stop();
    faults.dispose();
  });

  it('the acquire timeout fires with RESOURCE_EXHAUSTED when every session stays busy', async () => {
    faults.setRules(['delay C_Sign 400']);
    const client = gw.client();
    const results = await Promise.allSettled(Array.from({ length: 6 }, () => client.sign('dev-ec', 'ECDSA_SHA256', randomBytes(32))));
    faults.clear();
    const ok = results.filter((r) => r.status === 'fulfilled').length;
    const refused = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    assert.equal(ok, 2, 'the two requests that got a session finish');
    assert.equal(refused.length, 4);
    for (const r of refused) {
      assert.equal((r.reason as GatewayClientError).codeName, 'RESOURCE_EXHAUSTED');
      assert.match((r.reason as GatewayClientError).details, /no HSM session became free within 100 ms/);
    }
  });

  it('a request whose deadline passes while it waits for a session is never sent to the HSM', async () => {
    faults.setRules(['delay C_Sign 300', 'trace C_SignInit']);
    faults.clearTrace();
    const raw = gw.rawClient();
    const sign = (deadlineMs: number): Promise<number> => new Promise((resolve) => {
      raw.sign({ key: 'dev-ec', algorithm: SignatureAlgorithm.ECDSA_SHA256, input: { $case: 'digest', value: randomBytes(32) }, requestId: 0n }, new Metadata(), { deadline: Date.now() + deadlineMs }, (err) => resolve(err ? err.code : 0));
    });
    // Two slow requests hold both sessions; the third has 60 ms and waits behind them.
    const codes = await Promise.all([sign(5000), sign(5000), new Promise<number>((r) => setTimeout(() => void sign(60).then(r), 20))]);
    await new Promise((r) => setTimeout(r, 500));
    faults.clear();
    assert.deepEqual(codes, [0, 0, status.DEADLINE_EXCEEDED]);
    const signInits = faults.readTrace().filter((e) => e.fn === 'C_SignInit').length;
    assert.equal(signInits, 2, 'only the two live requests reached C_SignInit');
  });

  it('an idle session is validated before reuse and replaced when it is dead', async () => {
    faults.clear();
    const client = gw.client();
    await client.sign('dev-ec', 'ECDSA_SHA256', randomBytes(32));
    faults.setRules(['fail C_GetSessionInfo CKR_SESSION_HANDLE_INVALID once', 'trace C_GetSessionInfo', 'trace C_CloseSession']);
    faults.clearTrace();
    const sig = await client.sign('dev-ec', 'ECDSA_SHA256', randomBytes(32));
    assert.ok(sig.length > 0);
    const trace = faults.readTrace();
    const check = trace.find((e) => e.fn === 'C_GetSessionInfo' && e.injected);
    assert.ok(check, 'the idle session was checked with C_GetSessionInfo');
    assert.ok(trace.some((e) => e.fn === 'C_CloseSession' && e.t >= check.t), 'the dead session was discarded');
    faults.clear();
  });
});
