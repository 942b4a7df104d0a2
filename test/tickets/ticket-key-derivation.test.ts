// The derivation's pure parts: HKDF-Expand against RFC 5869, the HSM's input, the epoch windows.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { derivationInput, expandTicketKey, hkdfExpandSha256 } from '../../server/tickets/ticket-key-derivation';
import { epochWindow, windowsAt } from '../../server/tickets/ticket-epochs';

describe('ticket key derivation', () => {
  test('HKDF-Expand matches RFC 5869 test cases 1 and 3', () => {
    const case1 = hkdfExpandSha256(
      Buffer.from('077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5', 'hex'),
      Buffer.from('f0f1f2f3f4f5f6f7f8f9', 'hex'), 42);
    assert.equal(case1.toString('hex'), '3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865');
    const case3 = hkdfExpandSha256(Buffer.from('19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04', 'hex'), Buffer.alloc(0), 42);
    assert.equal(case3.toString('hex'), '8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8');
  });

  test('the key is 16 name + 32 HMAC + 32 AES bytes, all distinct', () => {
    const k = expandTicketKey(Buffer.alloc(32, 7));
    assert.deepEqual([k.name.length, k.hmacKey.length, k.aesKey.length], [16, 32, 32]);
    assert.notDeepEqual(k.hmacKey, k.aesKey);
  });

  test('scope, epoch and epoch length each change the HSM input (unambiguously)', () => {
    const base = derivationInput('edge', 3600, 480_000);
    assert.equal(base.toString('hex'), Buffer.concat([Buffer.from('hsmgw-ticket-v1\0edge\0'), Buffer.from('00000e10', 'hex'), Buffer.from('0000000000075300', 'hex')]).toString('hex'));
    assert.notDeepEqual(derivationInput('edge', 1800, 480_000), base);
    assert.notDeepEqual(derivationInput('edge', 3600, 480_001), base);
    assert.notDeepEqual(derivationInput('edg', 3600, 480_000), base);
    // The separator keeps "a" + "\0b..." apart from "a\0" + "b...".
    assert.notDeepEqual(derivationInput('a', 1, 0), derivationInput('a\u0000', 1, 0));
  });

  test('windows: next epoch announced, current, and decryptEpochs past ones', () => {
    const policy = { epochSeconds: 3600, decryptEpochs: 2 };
    const now = 100 * 3600 + 10;
    assert.deepEqual(windowsAt(policy, now).map((w) => w.epoch), [101, 100, 99, 98]);
    assert.deepEqual(epochWindow(policy, 100), { epoch: 100, notBefore: 360_000, encryptUntil: 363_600, decryptUntil: 370_800 });
    for (const w of windowsAt(policy, now)) assert.ok(w.decryptUntil > now);
  });
});
