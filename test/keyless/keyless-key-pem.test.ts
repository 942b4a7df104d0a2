// The key reference PEM and the bridge options.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';

import { keylessAddonPath } from '../../client/keyless/keyless-addon';
import { KeylessBridge } from '../../client/keyless/keyless-bridge';
import { KEYLESS_PEM_LABEL, encodeKeylessKeyPem } from '../../client/keyless/keyless-key-pem';
import { TEST_SIGNER } from './support/keyless-kit';

const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'der' });

test('the PEM names the bridge and key and carries only the public key', () => {
  const pem = encodeKeylessKeyPem('bridge-1', 'web-ec', ec);
  const body = Buffer.from(pem.split('\n').filter((line) => !line.startsWith('-----')).join(''), 'base64');
  assert.ok(pem.startsWith(`-----BEGIN ${KEYLESS_PEM_LABEL}-----\n`));
  assert.equal(body.subarray(0, 8).toString('latin1'), 'HSMGWKL1');
  assert.equal(body.readUInt16BE(8), 8);
  assert.equal(body.subarray(10, 18).toString(), 'bridge-1');
  assert.equal(body.subarray(20, 26).toString(), 'web-ec');
  assert.deepEqual(body.subarray(26), ec);
});

test('keyPem takes EC, RSA and Ed25519 keys and refuses others, and bad names', () => {
  const ed = generateKeyPairSync('ed25519').publicKey.export({ type: 'spki', format: 'der' });
  assert.match(encodeKeylessKeyPem('b', 'k', ed), /^-----BEGIN HSM GATEWAY KEYLESS KEY-----\n/);
  const x448 = generateKeyPairSync('x448').publicKey.export({ type: 'spki', format: 'der' });
  assert.throws(() => encodeKeylessKeyPem('b', 'k', x448), /EC, RSA or Ed25519 public key, not x448/);
  assert.throws(() => encodeKeylessKeyPem('b', 'k', Buffer.from('nope')), /not a DER SubjectPublicKeyInfo/);
  assert.throws(() => encodeKeylessKeyPem('b', '', ec), /keyName must be 1\.\.1024 bytes/);
});

test('bridge options are validated with errors naming the option', async () => {
  await assert.rejects(KeylessBridge.start({ signerModule: 'relative.js' }), /signerModule must be an absolute path/);
  await assert.rejects(KeylessBridge.start({ signerModule: TEST_SIGNER, signTimeoutMs: 0 }), /signTimeoutMs must be an integer/);
  await assert.rejects(KeylessBridge.start({ signerModule: TEST_SIGNER, signerOptions: { f: () => 1 } }), /signerOptions must be structured-cloneable/);
});

test('a signer module that cannot start makes start() reject with its error', async () => {
  await assert.rejects(KeylessBridge.start({ signerModule: path.join(__dirname, 'does-not-exist.js') }), /signer worker failed to start: .*Cannot find module/);
  await assert.rejects(KeylessBridge.start({ signerModule: __filename }), /does not export createRemoteSigner/);
});

test('an addon that decodes another PEM label (a stale or foreign build) is refused at load, by name', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hsmgw-addon-'));
  try {
    // The same binary with its label changed in place (same length): everything else identical.
    const original = fs.readFileSync(keylessAddonPath());
    const label = Buffer.from(KEYLESS_PEM_LABEL);
    const patched = Buffer.from(original);
    let at = patched.indexOf(label);
    assert.ok(at >= 0, 'the addon carries the label');
    for (; at >= 0; at = patched.indexOf(label, at + 1)) patched[at + label.length - 1] = 'Z'.charCodeAt(0);
    const file = path.join(dir, 'keyless.node');
    fs.writeFileSync(file, patched);
    const loader = path.resolve(__dirname, '..', '..', 'client', 'keyless', 'keyless-addon.js');
    const run = spawnSync(process.execPath, ['-e', `require(${JSON.stringify(loader)}).loadKeylessAddon()`], {
      env: { ...process.env, HSM_GATEWAY_KEYLESS_ADDON: file }, encoding: 'utf8',
    });
    assert.notEqual(run.status, 0);
    assert.match(run.stderr, /decodes "HSM GATEWAY KEYLESS KEZ" PEMs, this client writes "HSM GATEWAY KEYLESS KEY": rebuild the addon/);
    // Control: the unpatched copy loads.
    fs.writeFileSync(file, original);
    const control = spawnSync(process.execPath, ['-e', `require(${JSON.stringify(loader)}).loadKeylessAddon()`], {
      env: { ...process.env, HSM_GATEWAY_KEYLESS_ADDON: file }, encoding: 'utf8',
    });
    assert.equal(control.status, 0, control.stderr);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
