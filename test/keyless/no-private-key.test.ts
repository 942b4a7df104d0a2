/**
 * Nothing in a keyless proxy can hold the private key: the token's key cannot be read out, and
 * what the proxy gets (the keyless PEM, GetKey's answer) carries only public data.
 */
import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as pkcs11js from 'pkcs11js';
import { GatewayClient } from '../../client/gateway-client';
import { startGatewayProcess, type GatewayProcess } from '../support/gateway-process';
import { testEnvironment } from '../support/test-environment';

function decodeKeylessPem(pem: string): { parts: Buffer[]; total: number } {
  const body = Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ''), 'base64');
  assert.equal(body.subarray(0, 8).toString('latin1'), 'HSMGWKL1');
  let off = 8;
  const parts: Buffer[] = [];
  for (let i = 0; i < 2; i++) {
    const len = body.readUInt16BE(off);
    parts.push(body.subarray(off + 2, off + 2 + len));
    off += 2 + len;
  }
  parts.push(body.subarray(off));
  return { parts, total: body.length };
}

describe('the private key never reaches the proxy', () => {
  let gw: GatewayProcess;
  let client: GatewayClient;
  before(async () => {
    gw = await startGatewayProcess();
    client = new GatewayClient(gw.clientOptions());
  });
  after(async () => {
    await client.close();
    await gw.stop();
  });

  for (const name of ['dev-ec', 'dev-rsa']) {
    it(`${name}: the keyless PEM holds the bridge id, the key name and the public key, nothing else`, async () => {
      const creds = await client.tlsCredentials(name);
      const info = await client.getKey(name);
      const { parts } = decodeKeylessPem(creds.key);
      assert.equal(parts[1].toString('utf8'), name);
      assert.ok(parts[2].equals(info.publicKey), 'the rest is exactly the SPKI public key');
    });
  }

  it('on the token the keys are sensitive, never extractable, and reading them out fails', async () => {
    const env = await testEnvironment();
    const p11 = new pkcs11js.PKCS11();
    p11.load(env.modulePath);
    p11.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
    try {
      const slot = p11.C_GetSlotList(true).find((s) => p11.C_GetTokenInfo(s).label.trim() === env.tokenLabel);
      assert.ok(slot);
      const session = p11.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION);
      p11.C_Login(session, pkcs11js.CKU_USER, fs.readFileSync(env.pinFile, 'utf8').trim());
      for (const label of ['dev-ec', 'dev-rsa']) {
        p11.C_FindObjectsInit(session, [{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY }, { type: pkcs11js.CKA_LABEL, value: label }]);
        const [key] = p11.C_FindObjects(session, 1);
        p11.C_FindObjectsFinal(session);
        const flags = p11.C_GetAttributeValue(session, key, [
          { type: pkcs11js.CKA_SENSITIVE }, { type: pkcs11js.CKA_EXTRACTABLE }, { type: pkcs11js.CKA_ALWAYS_SENSITIVE }, { type: pkcs11js.CKA_NEVER_EXTRACTABLE },
        ]).map((a) => (a.value as Buffer)[0]);
        assert.deepEqual(flags, [1, 0, 1, 1], `${label}: sensitive, not extractable, always sensitive, never extractable`);
        const secret = label === 'dev-ec' ? pkcs11js.CKA_VALUE : pkcs11js.CKA_PRIVATE_EXPONENT;
        assert.throws(() => p11.C_GetAttributeValue(session, key, [{ type: secret }]), /CKR_ATTRIBUTE_SENSITIVE/);
      }
      p11.C_CloseSession(session);
    } finally {
      p11.C_Finalize();
    }
  });
});
