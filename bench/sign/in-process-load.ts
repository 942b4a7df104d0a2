/**
 * The baseline (forked by bench/run.ts): pkcs11js in this process against the same SoftHSM
 * token, with the gateway's session count and the same mechanism plan (server/pkcs11/mechanisms).
 * sync: C_SignInit + C_Sign on the event loop, round-robin over the sessions.
 * async: one signature in flight per session; C_SignInit is synchronous (pkcs11js has no async
 * form), C_Sign runs on the libuv threadpool through its callback form.
 */
import * as fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import * as pkcs11js from 'pkcs11js';
import { SignatureAlgorithm } from '../../proto/generated/hsmgateway/v1/signer';
import { mechanismPlan } from '../../server/pkcs11/mechanisms';
import { serveLoad, type LoadCounters, type RunningLoad } from '../support/load-process';
import type { InProcessSpec } from './sign-specs';

const DIGESTS = Array.from({ length: 64 }, () => randomBytes(32));

interface Token {
  p11: pkcs11js.PKCS11;
  sessions: Buffer[];
  key: Buffer;
  rawLength: number;
}

let opened: { p11: pkcs11js.PKCS11; sessions: Buffer[] } | undefined;
const keys = new Map<string, Buffer>();

function openToken(spec: InProcessSpec): Token {
  opened ??= openSessions(spec);
  const { p11, sessions } = opened;
  let key = keys.get(spec.keyLabel);
  if (!key) {
    p11.C_FindObjectsInit(sessions[0], [{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY }, { type: pkcs11js.CKA_LABEL, value: spec.keyLabel }]);
    [key] = p11.C_FindObjects(sessions[0], 1);
    p11.C_FindObjectsFinal(sessions[0]);
    if (!key) throw new Error(`no private key "${spec.keyLabel}"`);
    keys.set(spec.keyLabel, key);
  }
  return { p11, sessions, key, rawLength: spec.algorithm === 'ECDSA_SHA256' ? 64 : 256 };
}

function openSessions(spec: InProcessSpec): { p11: pkcs11js.PKCS11; sessions: Buffer[] } {
  process.env.SOFTHSM2_CONF = spec.softhsmConf;
  const p11 = new pkcs11js.PKCS11();
  p11.load(spec.modulePath);
  // Mandatory: without OS locking SoftHSM corrupts its heap under concurrent (async) signing.
  p11.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
  const slot = p11.C_GetSlotList(true).find((s) => p11.C_GetTokenInfo(s).label.trim() === spec.tokenLabel);
  if (!slot) throw new Error(`no token "${spec.tokenLabel}"`);
  const sessions = Array.from({ length: spec.sessions }, () => p11.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION));
  p11.C_Login(sessions[0], pkcs11js.CKU_USER, fs.readFileSync(spec.pinFile, 'utf8').trim());
  return { p11, sessions };
}

function syncLoad(t: Token, spec: InProcessSpec, counters: LoadCounters): RunningLoad {
  const plan = mechanismPlan(SignatureAlgorithm[spec.algorithm]);
  let stopping = false;
  let n = 0;
  let done: () => void = () => undefined;
  const stopped = new Promise<void>((r) => { done = r; });
  // Batches of ~5 ms, then yield so the orchestrator's messages get through.
  const batch = (): void => {
    if (stopping) return done();
    const until = performance.now() + 5;
    for (let t0 = performance.now(); t0 < until; ) {
      const session = t.sessions[n % t.sessions.length];
      try {
        t.p11.C_SignInit(session, plan.mechanism, t.key);
        plan.output(t.p11.C_Sign(session, plan.input(DIGESTS[n++ & 63]), Buffer.alloc(t.rawLength)));
      } catch (err) {
        counters.errors++;
        counters.firstError ??= (err as Error).message;
        stopping = true;
        break;
      }
      const t1 = performance.now();
      counters.latency.add((t1 - t0) * 1000);
      counters.ops++;
      t0 = t1;
    }
    setImmediate(batch);
  };
  setImmediate(batch);
  return { stop: () => { stopping = true; return stopped; } };
}

function asyncLoad(t: Token, spec: InProcessSpec, counters: LoadCounters): RunningLoad {
  const plan = mechanismPlan(SignatureAlgorithm[spec.algorithm]);
  let stopping = false;
  let n = 0;
  const loops = t.sessions.map((session) => new Promise<void>((resolve) => {
    const next = (): void => {
      if (stopping) return resolve();
      const t0 = performance.now();
      const input = plan.input(DIGESTS[n++ & 63]);
      const out = Buffer.alloc(t.rawLength);
      try {
        t.p11.C_SignInit(session, plan.mechanism, t.key);
      } catch (err) {
        counters.errors++;
        counters.firstError ??= (err as Error).message;
        return resolve();
      }
      // input and out stay referenced by this closure until the callback runs.
      t.p11.C_Sign(session, input, out, (err, sig) => {
        if (err) {
          counters.errors++;
          counters.firstError ??= err.message;
        } else {
          plan.output(sig);
          counters.latency.add((performance.now() - t0) * 1000);
          counters.ops++;
        }
        next();
      });
    };
    next();
  }));
  return { stop: async () => { stopping = true; await Promise.all(loops); } };
}

serveLoad<InProcessSpec>(async (spec, counters) => {
  const t = openToken(spec);
  return spec.mode === 'sync' ? syncLoad(t, spec, counters) : asyncLoad(t, spec, counters);
});
