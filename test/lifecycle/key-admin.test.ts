// `hsm-gateway key generate|list`: keys of every type generated inside a real SoftHSM token, checked
// with pkcs11-tool (sensitive, never extractable, sign only), refusals and exit codes.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parse as parseYaml, stringify as toYaml } from 'yaml';
import {
  cli, cliInProcess, cliJson, createLifecycleState, listTokenObjects, objectBlock, removeState, type LifecycleState,
} from './support/lifecycle-kit';

interface GeneratedKey {
  label: string; id: string; type: string; bits?: number; curve?: string; spec: string; publicKeyPem: string;
  flags: Record<string, boolean>; certificate?: unknown; gatewayNames: string[];
}

const SPECS: Array<{ spec: string; type: string; size: { bits?: number; curve?: string } }> = [
  { spec: 'ec-p256', type: 'EC', size: { curve: 'P-256' } },
  { spec: 'ec-p384', type: 'EC', size: { curve: 'P-384' } },
  { spec: 'rsa-2048', type: 'RSA', size: { bits: 2048 } },
  { spec: 'rsa-3072', type: 'RSA', size: { bits: 3072 } },
  { spec: 'rsa-4096', type: 'RSA', size: { bits: 4096 } },
];

describe('key generate / key list (direct PKCS#11)', () => {
  let state: LifecycleState;
  const generated = new Map<string, GeneratedKey>();

  before(async () => {
    state = await createLifecycleState('key-admin');
  });
  after(() => removeState(state));

  test('generates a key of each type inside the token: fresh CKA_ID, label = name, sign-only flags', { timeout: 60_000 }, async () => {
    for (const { spec, type, size } of SPECS) {
      const key = await cliJson<GeneratedKey>(state, ['key', 'generate', '--name', `gen-${spec}`, '--type', spec]);
      assert.equal(key.label, `gen-${spec}`);
      assert.equal(key.spec, spec);
      assert.equal(key.type, type);
      assert.deepEqual(key.bits !== undefined ? { bits: key.bits } : { curve: key.curve }, size);
      assert.match(key.id, /^[0-9a-f]{32}$/, 'a fresh 16-byte CKA_ID');
      assert.match(key.publicKeyPem, /^-----BEGIN PUBLIC KEY-----/);
      assert.deepEqual(key.flags, {
        sensitive: true, alwaysSensitive: true, extractable: false, neverExtractable: true, local: true,
        sign: true, decrypt: false, unwrap: false, derive: false,
      });
      assert.equal(key.certificate, undefined);
      generated.set(spec, key);
    }
    assert.equal(new Set([...generated.values()].map((k) => k.id)).size, SPECS.length, 'every CKA_ID is different');
  });

  test('pkcs11-tool sees each private key as sensitive, never extractable, local, usable only to sign', async () => {
    const privateKeys = await listTokenObjects(state, 'privkey');
    const publicKeys = await listTokenObjects(state, 'pubkey');
    for (const { spec, type } of SPECS) {
      const key = generated.get(spec);
      assert.ok(key, `${spec} was generated`);
      const block = objectBlock(privateKeys, key.label);
      assert.match(block, new RegExp(`^Private Key Object; ${type}`), block);
      assert.match(block, new RegExp(`ID:\\s+${key.id}\\n`), block);
      assert.match(block, /Usage:\s+sign\n/, `${key.label}: usage is sign only\n${block}`);
      assert.match(block, /Access:\s+sensitive, always sensitive, never extractable, local\n/, block);
      assert.doesNotMatch(block, /Access:.*\bextractable\b(?<!never extractable)/, block);
      const pub = objectBlock(publicKeys, key.label);
      assert.match(pub, new RegExp(`ID:\\s+${key.id}\\n`), `public key object with the same CKA_ID\n${pub}`);
    }
  });

  test('key list shows every key with type, size or curve, CKA_ID, flags, certificate and gateway names', async () => {
    const keys = await cliJson<GeneratedKey[]>(state, ['key', 'list']);
    const byLabel = new Map(keys.map((k) => [k.label, k]));
    for (const key of generated.values()) {
      const listed = byLabel.get(key.label);
      assert.ok(listed, key.label);
      assert.equal(listed.id, key.id);
      assert.equal(listed.type, key.type);
      assert.equal(listed.bits, key.bits);
      assert.equal(listed.curve, key.curve);
      assert.equal(listed.flags.extractable, false);
      assert.equal(listed.certificate, undefined);
      assert.deepEqual(listed.gatewayNames, [], 'not yet in the gateway config');
    }
    // The embedded default's keys carry their self-signed certificates and config names.
    const devEc = byLabel.get('dev-ec') as GeneratedKey & { certificate: { subject: string; notAfter: string; chainLength: number; expired: boolean } };
    assert.deepEqual(devEc.gatewayNames, ['dev-ec']);
    assert.equal(devEc.certificate.subject, 'CN=dev-ec.localhost');
    assert.equal(devEc.certificate.chainLength, 1);
    assert.equal(devEc.certificate.expired, false);
    assert.ok(Date.parse(devEc.certificate.notAfter) > Date.now());

    const text = await cli(state, ['key', 'list']);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^gen-ec-p384\tEC P-384\tid [0-9a-f]{32}\tsensitive,never-extractable,local use=sign\tno certificate$/m);
    assert.match(text.stdout, /^gen-rsa-4096\tRSA-4096\t/m);
    assert.match(text.stdout, /^dev-ec\t.*cert "CN=dev-ec\.localhost" until \S+, chain 1 gateway names: dev-ec$/m);
  });

  test('refuses to overwrite an existing name: exit 1, the token keeps the original key', async () => {
    const before = await listTokenObjects(state, 'privkey');
    const r = await cli(state, ['key', 'generate', '--name', 'gen-ec-p256', '--type', 'rsa-2048', '--json']);
    assert.equal(r.code, 1, r.stderr);
    const body = JSON.parse(r.stdout) as { reason: string; error: string };
    assert.equal(body.reason, 'exists');
    assert.match(body.error, /already exists on the token; refusing to overwrite it/);
    assert.equal(await listTokenObjects(state, 'privkey'), before, 'nothing changed on the token');
    // Also for a label the embedded default created.
    assert.equal((await cli(state, ['key', 'generate', '--name', 'dev-rsa', '--type', 'rsa-2048'])).code, 1);
  });

  test('usage errors exit 2 (missing or bad flags, no PIN option); config problems exit 2; a wrong PIN exits 1', async () => {
    const usage: string[][] = [
      ['key', 'generate', '--type', 'ec-p256'],
      ['key', 'generate', '--name', 'x'],
      ['key', 'generate', '--name', 'x', '--type', 'rsa-1024'],
      ['key', 'generate', '--name', '-bad name', '--type', 'ec-p256'],
      ['key', 'generate', '--name', 'x', '--type', 'ec-p256', '--pin', '1234'],
      ['key', 'frobnicate'],
      ['key'],
      ['cert', 'install', '--name', 'x'],
    ];
    const results = [];
    for (const args of usage) results.push(await cliInProcess([...args, '--json']));
    results.forEach((r, i) => {
      assert.equal(r.code, 2, `${usage[i].join(' ')}: ${r.stderr}`);
      assert.equal((JSON.parse(r.stdout) as { reason: string }).reason, 'usage', usage[i].join(' '));
    });
    const noConfig = await cliInProcess(['key', 'list', '--config', path.join(state.dir, 'missing.yaml')]);
    assert.equal(noConfig.code, 2);
    assert.match(noConfig.stderr, /missing\.yaml does not exist: pass --config/);

    const doc = parseYaml(fs.readFileSync(state.configFile, 'utf8')) as { pkcs11: { pin: { file?: string; env?: string } } };
    doc.pkcs11.pin = { env: 'HSMGW_LIFECYCLE_TEST_PIN' };
    const envConfig = path.join(state.dir, 'pin-from-env.yaml');
    fs.writeFileSync(envConfig, toYaml(doc));
    const unset = await cli(state, ['key', 'list', '--config', envConfig]);
    assert.equal(unset.code, 2, 'PIN variable not set: configuration error');
    assert.match(unset.stderr, /HSMGW_LIFECYCLE_TEST_PIN is not set/);
    const wrong = await cli(state, ['key', 'list', '--config', envConfig], { env: { HSMGW_LIFECYCLE_TEST_PIN: 'not-the-pin' } });
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /token login failed: CKR_PIN_INCORRECT/);
    assert.doesNotMatch(wrong.stderr, /not-the-pin/, 'the PIN is never printed');
    const right = await cli(state, ['key', 'list', '--config', envConfig], { env: { HSMGW_LIFECYCLE_TEST_PIN: fs.readFileSync(state.pinFile, 'utf8').trim() } });
    assert.equal(right.code, 0, right.stderr);
  });

  test('every lifecycle command has --help (exit 0)', async () => {
    const commands = [['key', '--help'], ['key', 'generate', '--help'], ['key', 'list', '--help'], ['cert', '--help'], ['cert', 'install', '--help'], ['cert', 'self-sign', '--help'], ['csr', '--help']];
    const results = [];
    for (const args of commands) results.push(await cliInProcess(args));
    results.forEach((r, i) => {
      const args = commands[i].join(' ');
      assert.equal(r.code, 0, args);
      assert.match(r.stdout, /^Usage: hsm-gateway /, args);
      assert.match(r.stdout, /Exit codes: 0 ok/, args);
    });
    const top = await cliInProcess(['--help']);
    assert.match(top.stdout, /\n {2}key {10}generate keys in the token/);
    // The two kinds of command, each under its heading.
    assert.match(top.stdout, /On the gateway host[^]*\n {2}cert install[^]*Through a running gateway[^]*\n {2}cert self-sign/);
  });
});
