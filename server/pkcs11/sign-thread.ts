/**
 * A sign thread: runs C_SignInit + C_Sign synchronously, off the event loop.
 *
 * pkcs11js only offers C_SignInit synchronously (60-110 us in SoftHSM), so running both calls
 * here keeps every HSM cycle off the gRPC thread. The module was initialised and logged in by
 * the main thread; this thread loads the same library (same dlopen handle, same state) and uses
 * the session and key handles it is given. It never initialises or finalizes the module.
 */
import { parentPort, workerData } from 'node:worker_threads';
import * as pkcs11js from 'pkcs11js';
import { ckrName } from './ckr';
import { mechanismPlan } from './mechanisms';
import type { SignJob, SignResult, SignThreadInit } from './sign-thread-protocol';

const { modulePath, generation } = workerData as SignThreadInit;
const p11 = new pkcs11js.PKCS11();
p11.load(modulePath);

const asBuffer = (u: Uint8Array): Buffer => Buffer.from(u.buffer, u.byteOffset, u.byteLength);

function run(job: SignJob): SignResult {
  // A job queued behind a stuck call may come up after a re-initialization: its handle numbers
  // may by then name other sessions and keys.
  if (Atomics.load(generation, 0) !== job.generation) {
    return { id: job.id, ok: false, ckr: undefined, message: 'handles from before the module was re-initialized', hsmNanos: 0, stale: true };
  }
  const start = process.hrtime.bigint();
  try {
    const plan = mechanismPlan(job.algorithm);
    const session = asBuffer(job.session);
    p11.C_SignInit(session, plan.mechanism, asBuffer(job.key));
    const raw = p11.C_Sign(session, plan.input(asBuffer(job.data)), Buffer.alloc(job.rawSignatureLength));
    const hsmNanos = Number(process.hrtime.bigint() - start);
    return { id: job.id, ok: true, signature: new Uint8Array(plan.output(raw)), hsmNanos };
  } catch (err) {
    return { id: job.id, ok: false, ckr: ckrName(err), message: (err as Error).message, hsmNanos: Number(process.hrtime.bigint() - start) };
  }
}

/** Answers go back in small groups: fewer messages, without holding early answers for a whole batch. */
const ANSWER_GROUP = 4;

function post(results: SignResult[]): void {
  // Signatures are exact-size copies: transfer them instead of cloning.
  const transfer = results.flatMap((r) => (r.ok ? [r.signature.buffer as ArrayBuffer] : []));
  parentPort?.postMessage(results, transfer);
}

// An empty answer says "module loaded, ready for jobs".
parentPort?.postMessage([]);

parentPort?.on('message', (batch: SignJob[]) => {
  let group: SignResult[] = [];
  for (const job of batch) {
    group.push(run(job));
    if (group.length === ANSWER_GROUP) {
      post(group);
      group = [];
    }
  }
  if (group.length) post(group);
});
