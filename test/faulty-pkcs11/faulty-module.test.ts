/**
 * Tests of the fault-injecting PKCS#11 module against a real SoftHSM2 token in a temp dir.
 * Needs gcc, softhsm2 and opensc (pkcs11-tool) on the machine.
 */
import { after, afterEach, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as pkcs11js from 'pkcs11js';
import { buildFaultyModule, FaultController, monotonicNowMs } from './faulty-module';
import { ckrName } from '../../server/pkcs11/ckr';

const PIN = '1234';
const SO_PIN = '5678';
const LABEL = 'faulty-test';
const CKF_TOKEN_PRESENT = 0x1;
const CKS_RW_PUBLIC_SESSION = 2; // CKS_* are not exported by pkcs11js
const CKS_RW_USER_FUNCTIONS = 3;
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

let workDir: string;
let faults: FaultController;
let p11: pkcs11js.PKCS11;
let slot: Buffer;
let privateKey: Buffer; // SoftHSM drops private handles with the last session: refreshed per login
let publicKey: crypto.KeyObject;
let session: Buffer; // fresh, logged-in session per test

const DATA = Buffer.from('resilience is a feature');
const DIGEST = crypto.createHash('sha256').update(DATA).digest();

function openSession(): Buffer {
  return p11.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
}

/** C_Login, tolerating the token-wide login state left by an earlier session. */
function login(s: Buffer): void {
  try {
    p11.C_Login(s, pkcs11js.CKU_USER, PIN);
  } catch (err) {
    if ((err as Error).message !== 'CKR_USER_ALREADY_LOGGED_IN') throw err;
  }
}

function signSync(s: Buffer): Buffer {
  p11.C_SignInit(s, { mechanism: pkcs11js.CKM_ECDSA }, privateKey);
  return p11.C_Sign(s, DIGEST, Buffer.alloc(64));
}

/** C_SignInit on this thread, C_Sign on the libuv threadpool (callback form). */
function signAsync(s: Buffer): Promise<Buffer> {
  p11.C_SignInit(s, { mechanism: pkcs11js.CKM_ECDSA }, privateKey);
  const out = Buffer.alloc(64);
  return new Promise((resolve, reject) => {
    p11.C_Sign(s, DIGEST, out, (err, sig) => {
      void out; // keep the output buffer referenced until the callback runs
      if (err) reject(err);
      else resolve(sig);
    });
  });
}

function verifies(sig: Buffer, data: Buffer = DATA): boolean {
  return crypto.verify('sha256', data, { key: publicKey, dsaEncoding: 'ieee-p1363' }, sig);
}

/** Asserts that fn throws a Pkcs11Error whose message is exactly the CKR name. */
function assertCkr(fn: () => unknown, ckr: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof Error, `expected an Error, got ${String(err)}`);
    assert.equal(err.message, ckr);
    return true;
  });
}

async function assertCkrAsync(p: Promise<unknown>, ckr: string): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof Error, `expected an Error, got ${String(err)}`);
    assert.equal(err.message, ckr);
    return true;
  });
}

/** Runs fn and returns its outcome as a CKR name ('CKR_OK' when it did not throw). */
function outcome(fn: () => unknown): string {
  try {
    fn();
    return 'CKR_OK';
  } catch (err) {
    return (err as Error).message;
  }
}

/** The slot of our token (SoftHSM also lists a slot with a free, uninitialized token). */
function findSlot(): Buffer {
  const slots = p11.C_GetSlotList(true).filter((s) => p11.C_GetTokenInfo(s).label.trim() === LABEL);
  assert.equal(slots.length, 1, `token ${LABEL} not found`);
  return slots[0];
}

/** Logs the session in and (re)finds the private key handle. */
function loginAndFindKey(s: Buffer): void {
  login(s);
  privateKey = findOne(s, [
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY },
    { type: pkcs11js.CKA_LABEL, value: 'k' },
  ]);
}

function findOne(s: Buffer, template: pkcs11js.Template): Buffer {
  p11.C_FindObjectsInit(s, template);
  const found = p11.C_FindObjects(s, 2);
  p11.C_FindObjectsFinal(s);
  assert.equal(found.length, 1, `expected exactly one object for ${JSON.stringify(template)}`);
  return found[0];
}

function ecPointToKey(point: Buffer): crypto.KeyObject {
  // CKA_EC_POINT is a DER OCTET STRING around the uncompressed point 04||x||y.
  const raw = point[0] === 0x04 && point[1] === point.length - 2 ? point.subarray(2) : point;
  assert.equal(raw.length, 65);
  assert.equal(raw[0], 0x04);
  return crypto.createPublicKey({
    key: {
      kty: 'EC',
      crv: 'P-256',
      x: raw.subarray(1, 33).toString('base64url'),
      y: raw.subarray(33).toString('base64url'),
    },
    format: 'jwk',
  });
}

before(() => {
  workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'faulty-pkcs11-test-'));
  const tokenDir = path.join(workDir, 'tokens');
  fs.mkdirSync(tokenDir);
  const conf = path.join(workDir, 'softhsm2.conf');
  fs.writeFileSync(conf, `directories.tokendir = ${tokenDir}\nobjectstore.backend = file\nlog.level = ERROR\n`);

  faults = new FaultController({ dir: path.join(workDir, 'faults') });
  assert.ok(fs.existsSync(faults.target), `target module ${faults.target} missing (apt-get install softhsm2)`);
  const env = { ...process.env, SOFTHSM2_CONF: conf };
  execFileSync('softhsm2-util', ['--init-token', '--free', '--label', LABEL, '--pin', PIN, '--so-pin', SO_PIN], {
    env,
    stdio: 'pipe',
  });
  execFileSync('pkcs11-tool', [
    '--module', faults.target, '--token-label', LABEL, '--login', '--pin', PIN,
    '--keypairgen', '--key-type', 'EC:prime256v1', '--label', 'k', '--id', '01',
  ], { env, stdio: 'pipe' });

  const so = buildFaultyModule();
  // The module reads its environment when it is loaded and initialized: set it first.
  Object.assign(process.env, faults.env(), { SOFTHSM2_CONF: conf });
  p11 = new pkcs11js.PKCS11();
  p11.load(so);
  p11.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
  slot = findSlot();

  const s = openSession();
  login(s);
  const pub = findOne(s, [
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PUBLIC_KEY },
    { type: pkcs11js.CKA_LABEL, value: 'k' },
  ]);
  const [attr] = p11.C_GetAttributeValue(s, pub, [{ type: pkcs11js.CKA_EC_POINT }]);
  publicKey = ecPointToKey(attr.value as Buffer);
  p11.C_CloseSession(s);
});

after(() => {
  if (p11) {
    try {
      p11.C_Finalize();
    } catch {
      /* already finalized */
    }
    p11.close();
  }
  faults?.dispose();
  if (workDir) fs.rmSync(workDir, { recursive: true, force: true });
});

describe('faulty PKCS#11 module', () => {
  beforeEach(() => {
    faults.clear();
    faults.clearTrace();
    session = openSession();
    loginAndFindKey(session);
  });

  afterEach(() => {
    faults.clear();
    try {
      p11.C_CloseSession(session);
    } catch {
      /* invalidated by the test */
    }
  });

  test('passes signing through; signatures verify with node:crypto', () => {
    const sig = signSync(session);
    assert.equal(sig.length, 64);
    assert.equal(verifies(sig), true);
    assert.equal(verifies(sig, Buffer.from('something else')), false);
    const info = p11.C_GetInfo();
    assert.match(info.manufacturerID, /SoftHSM/);
  });

  test('fail once: exactly one CKR_DEVICE_ERROR, then the real module again', () => {
    faults.fail('C_Sign', 'CKR_DEVICE_ERROR', { once: true });
    assertCkr(() => signSync(session), 'CKR_DEVICE_ERROR');
    // The injected failure also ended the real signing operation (no CKR_OPERATION_ACTIVE).
    assert.equal(verifies(signSync(session)), true);
    assert.equal(verifies(signSync(session)), true);
  });

  test('fail times N (and after N) fail exactly that many calls', () => {
    faults.fail('C_Sign', 'CKR_DEVICE_MEMORY', { times: 3 });
    const results = Array.from({ length: 6 }, () => outcome(() => signSync(session)));
    assert.deepEqual(results, [
      'CKR_DEVICE_MEMORY', 'CKR_DEVICE_MEMORY', 'CKR_DEVICE_MEMORY', 'CKR_OK', 'CKR_OK', 'CKR_OK',
    ]);

    faults.clear().fail('C_SignInit', 'CKR_KEY_HANDLE_INVALID', { times: 2, after: 1 });
    const results2 = Array.from({ length: 4 }, () => outcome(() => signSync(session)));
    assert.deepEqual(results2, ['CKR_OK', 'CKR_KEY_HANDLE_INVALID', 'CKR_KEY_HANDLE_INVALID', 'CKR_OK']);
  });

  test('numeric codes and rule order: first firing rule wins', () => {
    faults.batch((f) => {
      f.fail('C_GenerateRandom', 0x80000123, { once: true });
      f.fail('*', 'CKR_GENERAL_ERROR', { once: true });
    });
    const rnd = () => p11.C_GenerateRandom(session, Buffer.alloc(8));
    // The gateway names a vendor-defined code by its number (from the error's code, not its text).
    assert.throws(rnd, (err: unknown) => (err as pkcs11js.Pkcs11Error).code === 0x80000123 && ckrName(err) === 'CKR_0x80000123');
    assert.deepEqual([outcome(rnd), outcome(rnd)], ['CKR_GENERAL_ERROR', 'CKR_OK']);
  });

  test('fail prob P fails about P of the calls; prob 0 and 1 are exact', () => {
    const run = (n: number) => Array.from({ length: n }, () => outcome(() => signSync(session)));
    faults.seed(7).fail('C_Sign', 'CKR_FUNCTION_FAILED', { prob: 0.5 });
    const half = run(200);
    const failed = half.filter((r) => r === 'CKR_FUNCTION_FAILED').length;
    assert.equal(failed + half.filter((r) => r === 'CKR_OK').length, 200);
    assert.ok(failed > 60 && failed < 140, `prob 0.5 failed ${failed}/200`);

    faults.clear().fail('C_Sign', 'CKR_FUNCTION_FAILED', { prob: 0 });
    assert.ok(run(20).every((r) => r === 'CKR_OK'));
    faults.clear().fail('C_Sign', 'CKR_FUNCTION_FAILED', { prob: 1 });
    assert.ok(run(20).every((r) => r === 'CKR_FUNCTION_FAILED'));
  });

  test('delay adds at least the latency, only to the named function', () => {
    faults.delay('C_Sign', 120);
    let t0 = monotonicNowMs();
    const sig = signSync(session);
    const slow = monotonicNowMs() - t0;
    assert.ok(slow >= 120, `C_Sign took ${slow} ms`);
    assert.equal(verifies(sig), true);
    t0 = monotonicNowMs();
    p11.C_GetSessionInfo(session);
    const fast = monotonicNowMs() - t0;
    assert.ok(fast < 60, `C_GetSessionInfo took ${fast} ms`);
  });

  test('hang blocks the call until released, other calls keep working', async () => {
    faults.hang('C_Sign');
    let done = false;
    const pending = signAsync(session).finally(() => {
      done = true;
    });
    await sleep(150);
    assert.equal(done, false, 'C_Sign returned while hung');
    const other = openSession(); // other functions (and threads) are not blocked
    assert.equal(p11.C_GenerateRandom(other, Buffer.alloc(16)).length, 16);
    p11.C_CloseSession(other);
    const t0 = monotonicNowMs();
    faults.release();
    const sig = await pending;
    assert.ok(monotonicNowMs() - t0 < 1000, 'release took too long');
    assert.equal(verifies(sig), true);
  });

  test('hang releases into a failure when a fail rule replaces it', async () => {
    faults.hang('C_Sign');
    const pending = signAsync(session);
    await sleep(50);
    faults.setRules(['fail C_Sign CKR_DEVICE_ERROR']);
    await assertCkrAsync(pending, 'CKR_DEVICE_ERROR');
  });

  test('device removed: CKR_DEVICE_REMOVED everywhere; old sessions stay dead after restore', () => {
    const old = session;
    assert.equal(verifies(signSync(old)), true);
    faults.removeDevice();
    assertCkr(() => signSync(old), 'CKR_DEVICE_REMOVED');
    assertCkr(() => openSession(), 'CKR_DEVICE_REMOVED');
    assertCkr(() => p11.C_GetTokenInfo(slot), 'CKR_DEVICE_REMOVED');
    assert.equal(p11.C_GetSlotList(true).length, 0);
    assert.ok(p11.C_GetSlotList(false).length >= 1);
    assert.equal(p11.C_GetSlotInfo(slot).flags & CKF_TOKEN_PRESENT, 0);

    faults.restoreDevice();
    assert.deepEqual(findSlot(), slot);
    assert.equal(p11.C_GetSlotInfo(slot).flags & CKF_TOKEN_PRESENT, CKF_TOKEN_PRESENT);
    assertCkr(() => signSync(old), 'CKR_SESSION_HANDLE_INVALID');
    assertCkr(() => p11.C_GetSessionInfo(old), 'CKR_SESSION_HANDLE_INVALID');
    const fresh = openSession();
    session = fresh;
    // The removal logged the token out: a fresh login is needed (and succeeds).
    assert.equal(p11.C_GetSessionInfo(fresh).state, CKS_RW_PUBLIC_SESSION);
    p11.C_Login(fresh, pkcs11js.CKU_USER, PIN); // not CKR_USER_ALREADY_LOGGED_IN
    assert.equal(p11.C_GetSessionInfo(fresh).state, CKS_RW_USER_FUNCTIONS);
    loginAndFindKey(fresh);
    assert.equal(verifies(signSync(fresh)), true);
  });

  test('device removal also kills the sessions of an idle process', async () => {
    const old = session;
    faults.removeDevice();
    await sleep(100); // no PKCS#11 calls: the module's watcher applies the removal
    faults.restoreDevice();
    assertCkr(() => p11.C_GetSessionInfo(old), 'CKR_SESSION_HANDLE_INVALID');
    session = openSession();
    assert.equal(p11.C_GetSessionInfo(session).state, CKS_RW_PUBLIC_SESSION);
    p11.C_Login(session, pkcs11js.CKU_USER, PIN);
  });

  test('reconnect with C_Finalize + C_Initialize while removed and after restore', () => {
    const old = session;
    faults.removeDevice();
    p11.C_Finalize();
    p11.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
    assert.equal(p11.C_GetSlotList(true).length, 0);
    assertCkr(() => openSession(), 'CKR_DEVICE_REMOVED');
    faults.restoreDevice();
    assert.deepEqual(findSlot(), slot);
    session = openSession();
    loginAndFindKey(session);
    assert.equal(verifies(signSync(session)), true);
    assertCkr(() => p11.C_GetSessionInfo(old), 'CKR_SESSION_HANDLE_INVALID');
  });

  test('sessions do not survive C_Finalize even when the real module reuses handle numbers', () => {
    const old = session;
    p11.C_Finalize();
    p11.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
    session = openSession();
    // A fresh SoftHSM instance hands out small handle numbers again: open enough sessions that
    // one of them gets the real handle the old session had.
    const extra = Array.from({ length: 32 }, () => openSession());
    assert.notDeepEqual(session, old);
    assertCkr(() => p11.C_GetSessionInfo(old), 'CKR_SESSION_HANDLE_INVALID');
    for (const s of extra) p11.C_CloseSession(s);
    loginAndFindKey(session);
  });

  test('trace writes one line per traced call with monotonic time and CKR name', async () => {
    faults.batch((f) => {
      f.trace('C_Login');
      f.trace('C_Sign');
      f.fail('C_Login', 'CKR_PIN_INCORRECT', { once: true });
    });
    const t0 = monotonicNowMs();
    assertCkr(() => p11.C_Login(session, pkcs11js.CKU_USER, PIN), 'CKR_PIN_INCORRECT');
    // A 20 ms timer may fire up to ~1 ms early in monotonic time (libuv's cached loop time): sleep more.
    await sleep(25);
    assertCkr(() => p11.C_Login(session, pkcs11js.CKU_USER, PIN), 'CKR_USER_ALREADY_LOGGED_IN');
    signSync(session);
    const t1 = monotonicNowMs();
    const trace = faults.readTrace();
    assert.deepEqual(
      trace.map(({ fn, rv, injected }) => ({ fn, rv, injected })),
      [
        { fn: 'C_Login', rv: 'CKR_PIN_INCORRECT', injected: true },
        { fn: 'C_Login', rv: 'CKR_USER_ALREADY_LOGGED_IN', injected: false },
        { fn: 'C_Sign', rv: 'CKR_OK', injected: false },
      ],
    );
    for (const e of trace) assert.ok(e.t >= t0 && e.t <= t1, `trace time ${e.t} outside [${t0}, ${t1}]`);
    assert.ok(trace[1].t - trace[0].t >= 20, 'spacing between the logins is visible');
  });

  test('concurrent async signing: injected failures match the trace, no crash', async () => {
    faults.batch((f) => {
      f.seed(11);
      f.trace('C_Sign');
      f.fail('C_Sign', 'CKR_DEVICE_ERROR', { prob: 0.3 });
    });
    const sessions = Array.from({ length: 4 }, () => openSession());
    const outcomes: string[] = [];
    await Promise.all(
      sessions.map(async (s) => {
        for (let i = 0; i < 25; i++) {
          try {
            assert.equal(verifies(await signAsync(s)), true);
            outcomes.push('CKR_OK');
          } catch (err) {
            outcomes.push((err as Error).message);
          }
        }
      }),
    );
    for (const s of sessions) p11.C_CloseSession(s);
    const trace = faults.readTrace();
    assert.equal(trace.length, 100);
    const injected = trace.filter((e) => e.injected);
    assert.ok(injected.every((e) => e.rv === 'CKR_DEVICE_ERROR'));
    assert.equal(outcomes.filter((o) => o === 'CKR_DEVICE_ERROR').length, injected.length);
    assert.equal(outcomes.filter((o) => o === 'CKR_OK').length, 100 - injected.length);
    assert.ok(injected.length > 5 && injected.length < 60, `${injected.length} injected of 100`);
  });

  test('device removal while async signs are in flight: no crash, only expected CKRs', async () => {
    const sessions = Array.from({ length: 4 }, () => openSession());
    let stop = false;
    const seen = new Map<string, number>();
    const workers = sessions.map(async (s) => {
      while (!stop) {
        let rv = 'CKR_OK';
        try {
          assert.equal(verifies(await signAsync(s)), true);
        } catch (err) {
          rv = (err as Error).message;
        }
        seen.set(rv, (seen.get(rv) ?? 0) + 1);
        if (rv !== 'CKR_OK') await sleep(1);
      }
    });
    for (let i = 0; i < 3; i++) {
      await sleep(30);
      faults.removeDevice();
      await sleep(30);
      faults.restoreDevice();
    }
    stop = true;
    await Promise.all(workers);
    for (const rv of seen.keys()) {
      assert.ok(
        ['CKR_OK', 'CKR_DEVICE_REMOVED', 'CKR_SESSION_HANDLE_INVALID'].includes(rv),
        `unexpected ${rv}: ${JSON.stringify([...seen])}`,
      );
    }
    assert.ok((seen.get('CKR_OK') ?? 0) > 0, 'some signatures before the first removal');
    assert.ok((seen.get('CKR_DEVICE_REMOVED') ?? 0) > 0, 'removal was seen by in-flight signers');
    // The old sessions are dead for good; the gateway has to log in again.
    for (const s of sessions) assertCkr(() => p11.C_GetSessionInfo(s), 'CKR_SESSION_HANDLE_INVALID');
    session = openSession();
    assert.equal(p11.C_GetSessionInfo(session).state, CKS_RW_PUBLIC_SESSION);
    loginAndFindKey(session);
    assert.equal(verifies(signSync(session)), true);
  });

  test('unknown control lines are ignored, valid ones still apply', () => {
    faults.setRules(['# a comment', '', 'frobnicate C_Sign', 'fail C_Nope CKR_OK', 'fail C_Sign CKR_SESSION_CLOSED once']);
    assertCkr(() => signSync(session), 'CKR_SESSION_CLOSED');
    assert.equal(verifies(signSync(session)), true);
  });
});
