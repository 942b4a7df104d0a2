/**
 * The HSM failing at an epoch boundary (fault-injecting PKCS#11 module): the watcher still gets
 * the new epoch's set from the cached keys (the key announced one epoch ahead becomes current),
 * the failed derivation is counted, and the set is completed once the HSM is back.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { TicketKeysClient, type TicketKeySet } from '../../proto/generated/hsmgateway/v1/ticket_keys';
import { FaultController } from '../faulty-pkcs11/faulty-module';
import { parsePrometheusText, sampleValue } from '../support/prometheus-text';
import { IDENTITIES } from '../support/test-environment';
import { ALL_TEST_KEYS, startFaultyGateway, type TestGateway } from '../support/test-gateway';

const EPOCH = 3;

describe('ticket keys while the HSM is down', () => {
  const faults = new FaultController();
  let gw: TestGateway;

  before(async () => {
    gw = await startFaultyGateway(faults, {
      ticketKeys: { root: 'ticket-root', epochSeconds: EPOCH, decryptEpochs: 1 },
      authorization: { rules: [{ identity: IDENTITIES.dev, keys: ALL_TEST_KEYS, ticketKeyScopes: ['default'] }] },
      pkcs11: { healthCheckIntervalMs: 100, reconnectBackoffMs: { initial: 50, max: 200 } },
    });
  });
  after(async () => {
    faults.clear();
    await gw?.stop();
  });

  test('cached keys keep serving across a rotation; the set is completed when the HSM is back', async () => {
    const { env } = gw;
    const ids = env.pki.clients.dev;
    const client = new TicketKeysClient(gw.endpoint, grpc.credentials.createSsl(fs.readFileSync(env.pki.ca), fs.readFileSync(ids.key), fs.readFileSync(ids.cert)));
    const sets: TicketKeySet[] = [];
    // Early in an epoch, so the fault is in place well before the next boundary.
    await new Promise((r) => setTimeout(r, (EPOCH - ((Date.now() / 1000) % EPOCH)) * 1000 + 200));
    const call = client.watchTicketKeys({ scope: 'default' });
    call.on('data', (set: TicketKeySet) => sets.push(set));
    call.on('error', () => undefined);
    const until = async (what: string, check: () => boolean, ms: number): Promise<void> => {
      const end = Date.now() + ms;
      while (!check()) {
        if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    };
    try {
      await until('the first set', () => sets.length === 1, 5000);
      const first = sets[0];
      const next = first.keys[0];
      faults.fail('C_SignInit', 'CKR_DEVICE_ERROR');
      await until('the set of the next epoch', () => sets.length >= 2, (EPOCH + 1) * 1000);
      const during = sets[1];
      const epochs = during.keys.map((k) => Number(k.epoch));
      assert.equal(epochs[0], Number(next.epoch), 'the announced key is now the newest: no key for the epoch after could be derived');
      assert.deepEqual(Buffer.from(during.keys[0].aesKey), Buffer.from(next.aesKey));
      assert.deepEqual(epochs, [Number(next.epoch), Number(next.epoch) - 1]);
      const metrics = parsePrometheusText(await (await fetch(gw.metricsUrl)).text());
      assert.ok(sampleValue(metrics, 'hsmgw_ticket_key_derivations_total', { result: 'failed' }) >= 1);
      faults.clearFaults();
      await until('a complete set again', () => sets.some((s) => Number(s.keys[0].epoch) === Math.floor(Date.now() / 1000 / EPOCH) + 1 && s.keys.length === 3), 8000);
    } finally {
      call.cancel();
      client.close();
    }
  });
});
