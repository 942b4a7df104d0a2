/**
 * HSM failures injected below the gateway, in the PKCS#11 layer (test/faulty-pkcs11), each
 * survived without a restart.
 */
import { after, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parse as parseYaml, stringify as toYaml } from 'yaml';
import { SignatureAlgorithm } from '../../proto/generated/hsmgateway/v1/signer';
import { GatewayClientError } from '../../client/gateway-client-error';
import { FaultController } from '../faulty-pkcs11/faulty-module';
import { Logger } from '../../server/observability/logger';
import { startFaultyGateway, type TestGateway } from '../support/test-gateway';
import { parsePrometheusText, sampleValue, type ParsedMetrics } from '../support/prometheus-text';
import { IDENTITIES } from '../support/test-environment';
import { verifySignature } from '../support/signatures';

const faults = new FaultController();
after(() => faults.dispose());

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function metrics(gw: TestGateway): Promise<ParsedMetrics> {
  return parsePrometheusText(await (await fetch(gw.metricsUrl)).text());
}

async function outcome(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'OK';
  } catch (err) {
    return err instanceof GatewayClientError ? err.codeName : String(err);
  }
}

/** Runs `workers` loops of signatures for `ms`; returns every outcome. */
async function load(gw: TestGateway, workers: number, ms: number, key = 'dev-ec'): Promise<string[]> {
  const client = gw.client();
  const results: string[] = [];
  const end = Date.now() + ms;
  await Promise.all(Array.from({ length: workers }, async () => {
    while (Date.now() < end) results.push(await outcome(client.sign(key, 'ECDSA_SHA256', randomBytes(32))));
  }));
  return results;
}

const count = (xs: string[], x: string): number => xs.filter((v) => v === x).length;

describe('HSM faults', () => {
  it('a session invalidated under load is discarded, the request retried once on a fresh session: no client-visible error', async () => {
    faults.clear();
    const gw = await startFaultyGateway(faults, { pkcs11: { healthCheckIntervalMs: 600_000 } });
    try {
      const client = gw.client();
      await client.sign('dev-ec', 'ECDSA_SHA256', randomBytes(32));
      const before = sampleValue(await metrics(gw), 'hsmgw_sessions_discarded_total', { reason: 'session-lost' });
      const during = load(gw, 8, 1500);
      await sleep(300);
      const injectedAt = Date.now();
      faults.fail('C_Sign', 'CKR_SESSION_HANDLE_INVALID', { times: 5 });
      const results = await during;
      // Each failing call is retried once on a fresh session. The injection fails the next five
      // C_Sign calls whatever the session, so a retry can meet another one: only requests being
      // executed at that moment (8 in flight) may see an error, and only UNAVAILABLE.
      const errors = results.filter((r) => r !== 'OK');
      assert.ok(errors.length <= 8, `${errors.length} client-visible errors`);
      assert.ok(errors.every((e) => e === 'UNAVAILABLE'), errors.join(','));
      assert.ok(errors.length < 5, 'the single retry on a fresh session absorbed most of the faults');
      const m = await metrics(gw);
      assert.equal(sampleValue(m, 'hsmgw_sessions_discarded_total', { reason: 'session-lost' }) - before, 5, 'five sessions were thrown away');
      assert.equal(sampleValue(m, 'hsmgw_hsm_errors_total', { ckr: 'CKR_SESSION_HANDLE_INVALID' }), 5);
      // Recovery: a request right after the faults is served in well under a second.
      const t = Date.now();
      await client.sign('dev-ec', 'ECDSA_SHA256', randomBytes(32));
      assert.ok(Date.now() - t < 1000 && Date.now() - injectedAt < 5000);
    } finally {
      await gw.stop();
    }
  });

  it('CKR_USER_NOT_LOGGED_IN: one re-login, then success; never more than one login per backoff interval', async () => {
    faults.setRules(['trace C_Login']);
    faults.clearTrace();
    const gw = await startFaultyGateway(faults, { pkcs11: { healthCheckIntervalMs: 600_000, reconnectBackoffMs: { initial: 400, max: 2000 } } });
    try {
      const client = gw.client();
      const loginsAtStart = faults.readTrace().filter((e) => e.fn === 'C_Login').length;
      faults.batch((c) => { c.clear(); c.trace('C_Login'); c.fail('C_Sign', 'CKR_USER_NOT_LOGGED_IN', { once: true }); });
      assert.equal(await outcome(client.sign('dev-ec', 'ECDSA_SHA256', randomBytes(32))), 'OK', 'the request survived the lost login');
      const logins = faults.readTrace().filter((e) => e.fn === 'C_Login');
      assert.equal(logins.length - loginsAtStart, 1, 'exactly one re-login');

      // A token that keeps saying "not logged in": requests fail, logins stay spaced by the backoff.
      faults.batch((c) => { c.clear(); c.trace('C_Login'); c.fail('C_Sign', 'CKR_USER_NOT_LOGGED_IN'); });
      faults.clearTrace();
      const results = await load(gw, 4, 1500);
      assert.ok(results.length > 20);
      assert.deepEqual([...new Set(results)], ['UNAVAILABLE']);
      const times = faults.readTrace().filter((e) => e.fn === 'C_Login').map((e) => e.t);
      assert.ok(times.length >= 1 && times.length <= 4, `${times.length} logins in 1.5 s`);
      for (let i = 1; i < times.length; i++) assert.ok(times[i] - times[i - 1] >= 390, `logins ${Math.round(times[i] - times[i - 1])} ms apart`);

      // A PIN the token refuses is never retried: no path to a PIN lockout.
      faults.batch((c) => { c.clear(); c.trace('C_Login'); c.fail('C_Sign', 'CKR_USER_NOT_LOGGED_IN'); c.fail('C_Login', 'CKR_PIN_INCORRECT'); });
      await sleep(450);
      faults.clearTrace();
      await load(gw, 4, 1500);
      const attempts = faults.readTrace().filter((e) => e.fn === 'C_Login').length;
      assert.ok(attempts <= 1, `${attempts} login attempts after CKR_PIN_INCORRECT`);
      assert.equal(gw.gateway.hsm.state, 'unavailable');
    } finally {
      faults.clear();
      await gw.stop();
    }
  });

  it('device removed: NOT_SERVING, fast UNAVAILABLE with no queue, reconnects with exponential backoff, SERVING again, metrics show each step', async () => {
    faults.clear();
    const gw = await startFaultyGateway(faults, { pkcs11: { healthCheckIntervalMs: 100, reconnectBackoffMs: { initial: 100, max: 800 } } });
    try {
      const readyz = gw.metricsUrl.replace('/metrics', '/readyz');
      await load(gw, 2, 200);
      faults.batch((c) => { c.trace('C_Initialize'); c.removeDevice(); });
      faults.clearTrace();
      for (let i = 0; i < 100 && (await fetch(readyz)).status !== 503; i++) await sleep(20);
      assert.equal((await fetch(readyz)).status, 503);
      const down = await metrics(gw);
      assert.equal(sampleValue(down, 'hsmgw_hsm_ready'), 0);

      const started = Date.now();
      const results = await load(gw, 8, 1000);
      assert.deepEqual([...new Set(results)], ['UNAVAILABLE']);
      assert.ok(results.length > 200, `fails fast: ${results.length} answers in 1 s`);
      assert.ok(Date.now() - started < 2500);
      const during = await metrics(gw);
      assert.equal(sampleValue(during, 'hsmgw_pool_waiting_requests'), 0, 'no queue build-up');
      assert.equal(sampleValue(during, 'hsmgw_in_flight_requests'), 0);

      await sleep(1500);
      const inits = faults.readTrace().filter((e) => e.fn === 'C_Initialize').map((e) => e.t);
      assert.ok(inits.length >= 3, `${inits.length} reconnect attempts`);
      const gaps = inits.slice(1).map((t, i) => t - inits[i]);
      assert.ok(gaps[gaps.length - 1] > gaps[0] * 1.5, `backoff grows: ${gaps.map(Math.round).join(',')} ms`);
      assert.ok(Math.max(...gaps) < 1000, 'capped at the configured maximum');
      assert.ok(sampleValue(await metrics(gw), 'hsmgw_hsm_reconnects_total', { result: 'failed' }) >= 2);

      faults.restoreDevice();
      for (let i = 0; i < 100 && (await fetch(readyz)).status !== 200; i++) await sleep(50);
      assert.equal((await fetch(readyz)).status, 200, 'SERVING again without a restart');
      assert.deepEqual([...new Set(await load(gw, 4, 300))], ['OK']);
      const back = await metrics(gw);
      assert.equal(sampleValue(back, 'hsmgw_hsm_ready'), 1);
      assert.ok(sampleValue(back, 'hsmgw_hsm_reconnects_total', { result: 'ok' }) >= 1);
      assert.ok(sampleValue(back, 'hsmgw_hsm_errors_total', { ckr: 'CKR_DEVICE_REMOVED' }) >= 1);
    } finally {
      faults.clear();
      await gw.stop();
    }
  });

  it('handles never cross a re-initialization: a request in flight across a reconnect is signed by the key it named, and no session of the new generation is closed by the old pool (numbers reused as SoftHSM reuses them)', async () => {
    faults.setRules(['sessions reuse-handles', 'trace C_Initialize', 'trace C_CloseSession']);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hsm-generations-'));
    const configFile = path.join(dir, 'config.yaml');
    const gw = await startFaultyGateway(faults, {
      configFile, watchIntervalMs: 100,
      keys: [{ name: 'dev-ec', label: 'dev-ec' }, { name: 'alt-ec', label: 'alt-ec' }],
      authorization: { rules: [{ identity: IDENTITIES.dev, keys: ['dev-ec', 'alt-ec'] }] },
      pkcs11: { healthCheckIntervalMs: 100, reconnectBackoffMs: { initial: 100, max: 400 }, sessions: { min: 2, max: 2 } },
    });
    try {
      const client = gw.client();
      const spki = { 'dev-ec': (await client.getKey('dev-ec')).publicKey, 'alt-ec': (await client.getKey('alt-ec')).publicKey };
      const signsWith = async (key: 'dev-ec' | 'alt-ec'): Promise<boolean> => {
        const message = randomBytes(32);
        return verifySignature(spki[key], SignatureAlgorithm.ECDSA_SHA256, message, await client.signMessage(key, 'ECDSA_SHA256', message));
      };
      // The next generation resolves the keys in the other order: the old handle numbers name other keys.
      const reloaded = sampleValue(await metrics(gw), 'hsmgw_config_reloads_total', { what: 'config', result: 'ok' });
      const doc = parseYaml(fs.readFileSync(configFile, 'utf8')) as { keys: unknown[] };
      doc.keys.reverse();
      fs.writeFileSync(configFile, toYaml(doc));
      for (let i = 0; i < 100 && sampleValue(await metrics(gw), 'hsmgw_config_reloads_total', { what: 'config', result: 'ok' }) === reloaded; i++) await sleep(50);

      faults.add('delay C_SignInit 1200');
      const inFlight = signsWith('dev-ec');
      await sleep(150); // its C_SignInit is waiting below the gateway, holding a session and the key's handle
      faults.batch((c) => { c.setRules(['sessions reuse-handles', 'trace C_Initialize', 'trace C_CloseSession']); c.fail('C_GetSessionInfo', 'CKR_DEVICE_ERROR', { once: true }); });
      faults.clearTrace();
      assert.equal(await inFlight, true, 'the request in flight was signed by dev-ec');
      const readyz = gw.metricsUrl.replace('/metrics', '/readyz');
      for (let i = 0; i < 100 && !(faults.readTrace().some((e) => e.fn === 'C_Initialize') && (await fetch(readyz)).status === 200); i++) await sleep(50);
      const recovered = await metrics(gw);
      assert.equal(sampleValue(recovered, 'hsmgw_hsm_reconnects_total', { result: 'ok' }), 1);
      for (let i = 0; i < 20; i++) {
        assert.equal(await signsWith('dev-ec'), true, 'dev-ec after the reconnect');
        assert.equal(await signsWith('alt-ec'), true, 'alt-ec after the reconnect');
      }
      const trace = faults.readTrace();
      const reinit = trace.findIndex((e) => e.fn === 'C_Initialize');
      assert.deepEqual(trace.slice(reinit + 1).filter((e) => e.fn === 'C_CloseSession'), [], 'no session closed after the re-initialization');
      const after = await metrics(gw);
      assert.equal(sampleValue(after, 'hsmgw_sessions_discarded_total', { reason: 'session-lost' }), sampleValue(recovered, 'hsmgw_sessions_discarded_total', { reason: 'session-lost' }), 'no new-generation session was lost');
      assert.equal(sampleValue(after, 'hsmgw_hsm_reconnects_total', { result: 'ok' }), 1, 'one reconnect, not a cascade');
    } finally {
      faults.clear();
      await gw.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a hung HSM call frees its caller with UNAVAILABLE, its session is never reused while stuck, the pool does not leak, the thread is replaced with a log line and a metric', async () => {
    faults.clear();
    const logDir = fs.mkdtempSync(path.join(os.tmpdir(), 'hung-call-'));
    const logFile = path.join(logDir, 'log.jsonl');
    const logFd = fs.openSync(logFile, 'w');
    const gw = await startFaultyGateway(faults, { pkcs11: { operationTimeoutMs: 300, sessions: { min: 1, max: 3 }, signThreads: 2, healthCheckIntervalMs: 600_000 } }, new Logger('warn', logFd));
    try {
      const client = gw.client();
      await client.sign('dev-ec', 'ECDSA_SHA256', randomBytes(32));
      faults.hang('C_Sign');
      const t = Date.now();
      const stuck = await client.sign('dev-ec', 'ECDSA_SHA256', randomBytes(32)).catch((e: GatewayClientError) => e);
      assert.ok(stuck instanceof GatewayClientError);
      assert.equal(stuck.codeName, 'UNAVAILABLE');
      assert.match(stuck.details, /did not return within 300 ms/);
      assert.ok(Date.now() - t < 3000, 'freed by the operation timeout, not left hanging');
      const inUse = gw.gateway.hsm.poolStats.inUse;
      assert.equal(inUse, 1, 'the stuck session stays out of the pool');
      faults.release('C_Sign');
      for (let i = 0; i < 100 && gw.gateway.hsm.poolStats.inUse > 0; i++) await sleep(20);
      assert.equal(gw.gateway.hsm.poolStats.inUse, 0, 'released once the call returned');
      assert.ok(gw.gateway.hsm.poolStats.size <= 3);
      assert.deepEqual([...new Set(await load(gw, 4, 300))], ['OK'], 'a replacement sign thread serves');
      assert.ok(sampleValue(await metrics(gw), 'hsmgw_sessions_discarded_total', { reason: 'timeout' }) >= 1);
      assert.equal(sampleValue(await metrics(gw), 'hsmgw_sign_thread_replacements_total', { cause: 'stuck' }), 1);
      const replaced = fs.readFileSync(logFile, 'utf8').split('\n').filter((l) => l.includes('"sign thread replaced"')).map((l) => JSON.parse(l) as { reason?: string });
      assert.deepEqual(replaced.map((l) => l.reason), ['stuck'], 'one warning line for the replaced thread');
    } finally {
      faults.clear();
      await gw.stop();
      fs.closeSync(logFd);
      fs.rmSync(logDir, { recursive: true, force: true });
    }
  });

  it('a slow HSM (50 ms/op) under load: bounded queue, deadlines honoured, expired requests never sent, bounded memory, full speed again after', async () => {
    faults.clear();
    const gw = await startFaultyGateway(faults, { pkcs11: { sessions: { min: 2, max: 2, maxWaiting: 16, acquireTimeoutMs: 5000 }, signThreads: 2, healthCheckIntervalMs: 600_000 } });
    try {
      const client = gw.client('dev', { deadlineMs: 600 });
      await client.sign('dev-ec', 'ECDSA_SHA256', randomBytes(32)); // connect first
      faults.batch((c) => { c.delay('C_Sign', 50); c.trace('C_SignInit'); });
      faults.clearTrace();
      const rssBefore = process.memoryUsage().rss;
      const results = await Promise.all(Array.from({ length: 120 }, () => outcome(client.sign('dev-ec', 'ECDSA_SHA256', randomBytes(32)))));
      const ok = count(results, 'OK');
      assert.deepEqual([...new Set(results)].sort(), ['DEADLINE_EXCEEDED', 'OK', 'RESOURCE_EXHAUSTED'].filter((c) => results.includes(c)).sort());
      const tally = JSON.stringify(Object.fromEntries([...new Set(results)].map((c) => [c, count(results, c)])));
      assert.ok(count(results, 'RESOURCE_EXHAUSTED') > 80, `beyond the 16 waiting slots requests are refused at once: ${tally}`);
      assert.ok(ok >= 4 && ok <= 30, `${ok} signed at 2 × 20/s within 600 ms deadlines: ${JSON.stringify(Object.fromEntries([...new Set(results)].map((c) => [c, count(results, c)])))} ${faults.readTrace().length}`);
      await sleep(600);
      const sent = faults.readTrace().filter((e) => e.fn === 'C_SignInit').length;
      // At most the requests holding a session when the deadline struck were sent and not answered
      // in time; grpc-timeout is relative, so transit time under CPU contention adds a little slack.
      assert.ok(sent <= ok + 4, `only live requests reached the HSM: ${sent} C_SignInit for ${ok} successes`);
      assert.ok(process.memoryUsage().rss - rssBefore < 100 * 1024 * 1024, 'memory stays bounded');
      faults.clear();
      const fast = gw.client('dev', { deadlineMs: 2000 });
      const after = await Promise.all(Array.from({ length: 18 }, () => outcome(fast.sign('dev-ec', 'ECDSA_SHA256', randomBytes(32)))));
      assert.deepEqual([...new Set(after)], ['OK'], 'full service resumes');
    } finally {
      faults.clear();
      await gw.stop();
    }
  });

  it('session creation failing: no busy loop, the event loop stays responsive, bounded backoff, an honest error', async () => {
    faults.clear();
    const gw = await startFaultyGateway(faults, { pkcs11: { sessions: { min: 0, max: 2, acquireTimeoutMs: 400 }, reconnectBackoffMs: { initial: 100, max: 400 }, healthCheckIntervalMs: 600_000 } });
    try {
      faults.batch((c) => { c.fail('C_OpenSession', 'CKR_SESSION_COUNT'); c.trace('C_OpenSession'); });
      faults.clearTrace();
      const lag = monitorEventLoopDelay({ resolution: 10 });
      lag.enable();
      const cpuBefore = process.cpuUsage();
      const results = await Promise.all(Array.from({ length: 6 }, () => gw.client().sign('dev-ec', 'ECDSA_SHA256', randomBytes(32)).catch((e: GatewayClientError) => e)));
      await sleep(1200);
      lag.disable();
      const cpu = process.cpuUsage(cpuBefore);
      for (const r of results) {
        assert.ok(r instanceof GatewayClientError);
        assert.equal(r.codeName, 'UNAVAILABLE');
        assert.match(r.details, /cannot open a PKCS#11 session: CKR_SESSION_COUNT/);
      }
      const attempts = faults.readTrace().filter((e) => e.fn === 'C_OpenSession').length;
      assert.ok(attempts >= 2 && attempts <= 20, `${attempts} C_OpenSession attempts in ~1.6 s`);
      assert.ok(lag.max / 1e6 < 200, `event loop lag ${lag.max / 1e6} ms`);
      assert.ok((cpu.user + cpu.system) / 1000 < 1200, 'not spinning');
      faults.clear();
      await sleep(500);
      assert.equal(await outcome(gw.client().sign('dev-ec', 'ECDSA_SHA256', randomBytes(32))), 'OK', 'recovers once sessions can be opened');
    } finally {
      faults.clear();
      await gw.stop();
    }
  });
});
