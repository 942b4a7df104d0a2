/**
 * The root secret of the ticket keys on a fresh embedded default: created sensitive and never
 * extractable (checked with pkcs11-tool), `key generate --type ticket-root`, a missing or
 * extractable root stops the gateway with exit code 2, and two gateway processes on the same
 * token serve byte-identical keys with no coordination.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parse as parseYaml, stringify as toYaml } from 'yaml';
import type { TicketKeySetView } from '../../client/ticket-keys/ticket-key-stream';
import {
  SOFTHSM_MODULE, cli, createLifecycleState, devClient, removeState, run, startGatewayProcess, type LifecycleState,
} from '../lifecycle/support/lifecycle-kit';

async function pkcs11Tool(state: LifecycleState, args: string[]): Promise<string> {
  const r = await run('pkcs11-tool', ['--module', SOFTHSM_MODULE, '--token-label', 'hsm-gateway-dev', '--login', '--pin', 'env:HSMGW_TEST_PIN', ...args], {
    env: { SOFTHSM2_CONF: state.softhsmConf, HSMGW_TEST_PIN: fs.readFileSync(state.pinFile, 'utf8').trim() },
  });
  if (r.code !== 0) throw new Error(`pkcs11-tool ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

function secretBlock(listing: string, label: string): string {
  return listing.split(/(?=Secret Key Object)/).find((b) => new RegExp(`label:\\s+${label}\\n`).test(b)) ?? '';
}

/** A copy of the embedded default's config on ephemeral ports, with `edit` applied. */
function writeConfig(state: LifecycleState, name: string, edit: (doc: Record<string, unknown>) => void = () => undefined): string {
  const doc = parseYaml(fs.readFileSync(state.configFile, 'utf8')) as Record<string, unknown>;
  doc.listen = { grpc: '127.0.0.1:0', http: '127.0.0.1:0' };
  doc.logging = { level: 'info', audit: false };
  edit(doc);
  const file = path.join(state.dir, name);
  fs.writeFileSync(file, toYaml(doc), { mode: 0o600 });
  return file;
}

async function firstSet(state: LifecycleState, endpoint: string, scope: string): Promise<TicketKeySetView> {
  const client = devClient(state, endpoint);
  try {
    const stream = client.watchTicketKeys(scope, { update: () => undefined, refused: () => undefined });
    try {
      return await stream.first();
    } finally {
      stream.close();
    }
  } finally {
    await client.close();
  }
}

const keyBytes = (set: TicketKeySetView): string[] => set.keys.map((k) => `${k.epoch}:${Buffer.concat([k.name, k.hmacKey, k.aesKey]).toString('hex')}`);

describe('ticket-key root', () => {
  let state: LifecycleState;
  before(async () => { state = await createLifecycleState('ticket-root'); });
  after(() => removeState(state));

  test('the embedded default creates ticket-root: a generic secret, sensitive, never extractable, and grants scope "default"', async () => {
    const block = secretBlock(await pkcs11Tool(state, ['--list-objects', '--type', 'secrkey']), 'ticket-root');
    assert.match(block, /^Secret Key Object; Generic secret length 32\n/, block);
    assert.match(block, /Access:\s+sensitive, always sensitive, never extractable, local\n/, block);
    const doc = parseYaml(fs.readFileSync(state.configFile, 'utf8')) as { ticketKeys: { root: string }; authorization: { rules: Array<{ ticketKeyScopes: string[] }> } };
    assert.equal(doc.ticketKeys.root, 'ticket-root');
    assert.deepEqual(doc.authorization.rules[0].ticketKeyScopes, ['default']);
  });

  test('key generate --type ticket-root makes another root and never overwrites one', async () => {
    const made = await cli(state, ['key', 'generate', '--type', 'ticket-root', '--name', 'fleet-root']);
    assert.equal(made.code, 0, made.stderr);
    assert.match(made.stdout, /sensitive, never-extractable/);
    const block = secretBlock(await pkcs11Tool(state, ['--list-objects', '--type', 'secrkey']), 'fleet-root');
    assert.match(block, /Access:\s+sensitive, always sensitive, never extractable, local\n/, block);
    const again = await cli(state, ['key', 'generate', '--type', 'ticket-root', '--name', 'fleet-root']);
    assert.equal(again.code, 1, again.stderr);
    assert.match(again.stderr, /already exists/);
  });

  test('a missing root stops the gateway with exit code 2', async () => {
    const file = writeConfig(state, 'missing-root.yaml', (doc) => { doc.ticketKeys = { root: 'no-such-root' }; });
    const r = await cli(state, ['serve', '--config', file]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /ticketKeys\.root: no secret key labelled "no-such-root"/);
  });

  test('an extractable root stops the gateway with exit code 2', async () => {
    await pkcs11Tool(state, ['--keygen', '--key-type', 'GENERIC:32', '--label', 'leaky-root', '--extractable', '--usage-sign']);
    const file = writeConfig(state, 'leaky-root.yaml', (doc) => { doc.ticketKeys = { root: 'leaky-root' }; });
    const r = await cli(state, ['serve', '--config', file]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /ticketKeys\.root: "leaky-root" is extractable or not sensitive/);
  });

  test('two gateway processes on the same token serve byte-identical keys; another epoch length, other keys', async () => {
    const file = writeConfig(state, 'replica.yaml');
    const shortEpochs = writeConfig(state, 'short-epochs.yaml', (doc) => { doc.ticketKeys = { root: 'ticket-root', epochSeconds: 1800 }; });
    const gateways = await Promise.all([startGatewayProcess(state, file), startGatewayProcess(state, file), startGatewayProcess(state, shortEpochs)]);
    try {
      const [a, b, c] = await Promise.all(gateways.map((g) => firstSet(state, g.endpoint, 'default')));
      assert.equal(a.keys.length, 4);
      assert.deepEqual(keyBytes(a), keyBytes(b));
      const names = new Set(a.keys.map((k) => k.name.toString('hex')));
      assert.ok(c.keys.every((k) => !names.has(k.name.toString('hex'))), 'no key shared between epoch lengths');
      const other = await firstSet(state, gateways[0].endpoint, 'default');
      assert.deepEqual(keyBytes(other), keyBytes(a), 'derivation is stable');
    } finally {
      await Promise.all(gateways.map((g) => g.stop()));
    }
  });
});
