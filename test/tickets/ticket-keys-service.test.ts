/**
 * The TicketKeys service against the SoftHSM token: key sets, authorization by scope (exact
 * gRPC codes), audit lines without key material, metrics, a reload that takes a scope away, and
 * the service absent (UNIMPLEMENTED) when no ticketKeys section is configured.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { parse as parseYaml, stringify as toYaml } from 'yaml';
import { TicketKeysClient, type TicketKeySet } from '../../proto/generated/hsmgateway/v1/ticket_keys';
import { Logger } from '../../server/observability/logger';
import { parsePrometheusText, sampleValue } from '../support/prometheus-text';
import { IDENTITIES, type TestEnvironment } from '../support/test-environment';
import { ALL_TEST_KEYS, startTestGateway, type TestGateway } from '../support/test-gateway';

const EPOCH_SECONDS = 3600;
const RULES = [
  { identity: IDENTITIES.dev, keys: ALL_TEST_KEYS, ticketKeyScopes: ['default', 'edge-*'] },
  // A rule may grant scopes and no signing keys.
  { identity: IDENTITIES.nobody, ticketKeyScopes: ['api'] },
  { identity: IDENTITIES.pssOnly, keys: ['dev-rsa'] },
];

type Identity = keyof TestEnvironment['pki']['clients'];

function ticketClient(gw: TestGateway, identity: Identity): TicketKeysClient {
  const { env } = gw;
  const ids = env.pki.clients[identity];
  return new TicketKeysClient(gw.endpoint, grpc.credentials.createSsl(fs.readFileSync(env.pki.ca), fs.readFileSync(ids.key), fs.readFileSync(ids.cert)));
}

/** The first set of a stream, then the stream is cancelled; or the call's error. */
function firstSet(client: TicketKeysClient, scope: string): Promise<TicketKeySet> {
  return new Promise((resolve, reject) => {
    const call = client.watchTicketKeys({ scope });
    call.once('data', (set: TicketKeySet) => { call.cancel(); resolve(set); });
    call.on('error', (err: grpc.ServiceError) => { if (err.code !== grpc.status.CANCELLED) reject(err); });
  });
}

async function refusal(client: TicketKeysClient, scope: string): Promise<grpc.ServiceError> {
  return firstSet(client, scope).then(() => assert.fail(`scope ${scope} was served`), (err: grpc.ServiceError) => err);
}

type LogLine = Record<string, unknown>;
const readLines = (file: string): LogLine[] => fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as LogLine);

describe('TicketKeys service', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hsmgw-tickets-'));
  const logFile = path.join(dir, 'log.jsonl');
  const configFile = path.join(dir, 'config.yaml');
  let fd: number;
  let gw: TestGateway;

  before(async () => {
    fd = fs.openSync(logFile, 'w');
    gw = await startTestGateway({
      ticketKeys: { root: 'ticket-root', epochSeconds: EPOCH_SECONDS }, authorization: { rules: RULES },
      logging: { audit: true, level: 'info' }, configFile, watchIntervalMs: 100,
    }, new Logger('info', fd));
  });
  after(async () => {
    await gw?.stop();
    fs.closeSync(fd);
  });

  test('a granted scope gets the next, current and two past epochs\' keys, with their windows', async () => {
    const set = await firstSet(ticketClient(gw, 'dev'), 'default');
    const now = Date.now() / 1000;
    const current = Math.floor(now / EPOCH_SECONDS);
    assert.equal(set.scope, 'default');
    assert.equal(set.epochSeconds, EPOCH_SECONDS);
    assert.deepEqual(set.keys.map((k) => Number(k.epoch)), [current + 1, current, current - 1, current - 2]);
    assert.equal(Number(set.nextUpdate), (current + 1) * EPOCH_SECONDS);
    for (const k of set.keys) {
      assert.deepEqual([k.name.length, k.hmacKey.length, k.aesKey.length], [16, 32, 32]);
      assert.equal(Number(k.notBefore), Number(k.epoch) * EPOCH_SECONDS);
      assert.equal(Number(k.encryptUntil), (Number(k.epoch) + 1) * EPOCH_SECONDS);
      assert.equal(Number(k.decryptUntil), (Number(k.epoch) + 3) * EPOCH_SECONDS);
    }
    assert.equal(new Set(set.keys.map((k) => Buffer.from(k.name).toString('hex'))).size, 4);
  });

  test('the same scope and epoch give the same bytes; another scope other bytes', async () => {
    const a = await firstSet(ticketClient(gw, 'dev'), 'default');
    const b = await firstSet(ticketClient(gw, 'dev'), 'default');
    const edge = await firstSet(ticketClient(gw, 'dev'), 'edge-eu');
    assert.deepEqual(TicketKeySetBytes(a), TicketKeySetBytes(b));
    assert.notDeepEqual(a.keys[1].aesKey, edge.keys[1].aesKey);
    assert.notDeepEqual(a.keys[1].name, edge.keys[1].name);
  });

  test('a rule granting only a scope (no keys) serves it; its identity still may not sign', async () => {
    const set = await firstSet(ticketClient(gw, 'nobody'), 'api');
    assert.equal(set.keys.length, 4);
    const err = await gw.client('nobody').sign('dev-ec', 'ECDSA_SHA256', Buffer.alloc(32)).then(() => assert.fail('signed'), (e: { code: number }) => e);
    assert.equal(err.code, grpc.status.PERMISSION_DENIED);
  });

  test('an ungranted scope is PERMISSION_DENIED and audited; a malformed one INVALID_ARGUMENT', async () => {
    assert.equal((await refusal(ticketClient(gw, 'dev'), 'api')).code, grpc.status.PERMISSION_DENIED);
    assert.equal((await refusal(ticketClient(gw, 'pssOnly'), 'default')).code, grpc.status.PERMISSION_DENIED);
    assert.equal((await refusal(ticketClient(gw, 'dev'), 'bad scope!')).code, grpc.status.INVALID_ARGUMENT);
    assert.equal((await refusal(ticketClient(gw, 'dev'), '')).code, grpc.status.INVALID_ARGUMENT);
    await new Promise((r) => setTimeout(r, 1200));
    const refused = readLines(logFile).filter((l) => l.msg === 'ticket keys refused');
    const denied = refused.find((l) => l.identity === IDENTITIES.dev && l.outcome === 'PERMISSION_DENIED');
    assert.ok(denied, JSON.stringify(refused));
    assert.equal(denied.first_key, 'api');
    assert.equal(denied.first_rpc, 'WatchTicketKeys');
    assert.ok(refused.some((l) => l.identity === IDENTITIES.pssOnly && l.outcome === 'PERMISSION_DENIED'));
  });

  test('each set sent is one audit line with identity, scope and epochs, never key material', async () => {
    const set = await firstSet(ticketClient(gw, 'dev'), 'edge-audit');
    await new Promise((r) => setTimeout(r, 200));
    const lines = readLines(logFile).filter((l) => l.msg === 'ticket keys' && l.scope === 'edge-audit');
    assert.equal(lines.length, 1);
    const epochs = set.keys.map((k) => Number(k.epoch));
    assert.equal(lines[0].epochs, `${Math.min(...epochs)}..${Math.max(...epochs)}`);
    assert.equal(lines[0].identity, IDENTITIES.dev);
    const log = fs.readFileSync(logFile, 'utf8');
    for (const k of set.keys) {
      for (const secret of [k.aesKey, k.hmacKey, k.name]) {
        for (const encoding of ['hex', 'base64'] as const) assert.ok(!log.includes(Buffer.from(secret).toString(encoding)), 'key material in the log');
      }
    }
  });

  test('metrics: fetches by scope and result, open watchers, derivations', async () => {
    const call = ticketClient(gw, 'dev').watchTicketKeys({ scope: 'default' });
    call.on('error', () => undefined);
    await new Promise((resolve) => call.once('data', resolve));
    const m = parsePrometheusText(await (await fetch(gw.metricsUrl)).text());
    assert.ok(sampleValue(m, 'hsmgw_ticket_key_fetches_total', { scope: 'default', result: 'OK' }) >= 1);
    assert.ok(sampleValue(m, 'hsmgw_ticket_key_fetches_total', { scope: '-', result: 'PERMISSION_DENIED' }) >= 1);
    assert.equal(sampleValue(m, 'hsmgw_ticket_key_fetches_total', { scope: 'api', result: 'PERMISSION_DENIED' }), 0, 'a refused scope is never a label');
    assert.ok(!(await (await fetch(gw.metricsUrl)).text()).includes('bad scope!'), 'a malformed scope is never a label');
    assert.equal(sampleValue(m, 'hsmgw_ticket_key_watchers'), 1);
    assert.ok(sampleValue(m, 'hsmgw_ticket_key_derivations_total', { result: 'ok' }) >= 8);
    call.cancel();
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(sampleValue(parsePrometheusText(await (await fetch(gw.metricsUrl)).text()), 'hsmgw_ticket_key_watchers'), 0);
  });

  test('a reload that removes the grant ends the open stream with PERMISSION_DENIED', async () => {
    const call = ticketClient(gw, 'nobody').watchTicketKeys({ scope: 'api' });
    await new Promise((resolve) => call.once('data', resolve));
    const ended = new Promise<grpc.ServiceError>((resolve) => call.on('error', resolve));
    const doc = parseYaml(fs.readFileSync(configFile, 'utf8')) as { authorization: { rules: Array<Record<string, unknown>> } };
    doc.authorization.rules = doc.authorization.rules.filter((r) => r.identity !== IDENTITIES.nobody);
    fs.writeFileSync(`${configFile}.tmp`, toYaml(doc));
    fs.renameSync(`${configFile}.tmp`, configFile);
    const err = await ended;
    assert.equal(err.code, grpc.status.PERMISSION_DENIED);
    assert.equal((await refusal(ticketClient(gw, 'nobody'), 'api')).code, grpc.status.PERMISSION_DENIED);
  });
});

function TicketKeySetBytes(set: TicketKeySet): string[] {
  return set.keys.map((k) => Buffer.concat([k.name, k.hmacKey, k.aesKey]).toString('hex'));
}

describe('TicketKeys not configured', () => {
  let gw: TestGateway;
  before(async () => { gw = await startTestGateway(); });
  after(async () => { await gw?.stop(); });

  test('WatchTicketKeys is UNIMPLEMENTED', async () => {
    assert.equal((await refusal(ticketClient(gw, 'dev'), 'default')).code, grpc.status.UNIMPLEMENTED);
  });
});
