import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { GatewayClientError } from '../../client/gateway-client-error';
import { FaultController } from '../faulty-pkcs11/faulty-module';
import { startFaultyGateway, type TestGateway } from '../support/test-gateway';

const waitFor = async (what: string, check: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> => {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  assert.fail(`timed out waiting for ${what}`);
};

const faults = new FaultController();
after(() => faults.dispose());

describe('HSM unavailable', () => {
  let gw: TestGateway;
  before(async () => {
    gw = await startFaultyGateway(faults, { pkcs11: { healthCheckIntervalMs: 100, reconnectBackoffMs: { initial: 50, max: 200 } } });
  });
  after(async () => {
    await gw.stop();
  });

  it('device removed: UNAVAILABLE, readiness 503; back to serving by itself when the device returns', async () => {
    const client = gw.client();
    const readyz = gw.metricsUrl.replace('/metrics', '/readyz');
    await client.sign('dev-ec', 'ECDSA_SHA256', randomBytes(32));
    faults.removeDevice();
    await waitFor('readiness to drop', async () => (await fetch(readyz)).status === 503);
    await assert.rejects(client.sign('dev-ec', 'ECDSA_SHA256', randomBytes(32)), (err: GatewayClientError) => {
      assert.equal(err.codeName, 'UNAVAILABLE');
      assert.match(err.details, /HSM unavailable/);
      return true;
    });
    faults.restoreDevice();
    await waitFor('readiness to come back', async () => (await fetch(readyz)).status === 200);
    const sig = await client.sign('dev-ec', 'ECDSA_SHA256', randomBytes(32));
    assert.ok(sig.length > 0);
  });
});

describe('graceful shutdown', () => {
  it('requests in flight when shutdown starts finish within the grace period', async () => {
    faults.clear();
    faults.trace('C_Sign');
    faults.clearTrace();
    const gw = await startFaultyGateway(faults, { shutdown: { graceMs: 5000 } });
    try {
      faults.delay('C_Sign', 300);
      const client = gw.client();
      const inFlight = Array.from({ length: 4 }, () => client.sign('dev-ec', 'ECDSA_SHA256', randomBytes(32)));
      await new Promise((r) => setTimeout(r, 100));
      const stopped = gw.gateway.stop();
      const results = await Promise.allSettled(inFlight);
      await stopped;
      assert.deepEqual(results.map((r) => r.status), ['fulfilled', 'fulfilled', 'fulfilled', 'fulfilled']);
      const signs = faults.readTrace().filter((e) => e.fn === 'C_Sign');
      assert.equal(signs.length, 4, 'the four slow signatures really ran');
      assert.equal(gw.gateway.hsm.state, 'closed');
    } finally {
      await gw.stop();
    }
  });
});
