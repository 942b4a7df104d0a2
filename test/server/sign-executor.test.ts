/**
 * The sign executor on its own (no gRPC): shared-memory rings, wake-ups and session handling,
 * against SoftHSM through the fault-injecting module. A lost wake-up shows as a task that never
 * finishes, so every wait here is bounded and reports what is still missing.
 */
import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { SignatureAlgorithm } from '../../proto/generated/hsmgateway/v1/signer';
import { buildConfig } from '../../server/config/load-config';
import { readPin } from '../../server/config/read-pin';
import { HsmModule } from '../../server/pkcs11/hsm-module';
import { resolveKeys, type ResolvedKey } from '../../server/pkcs11/key-store';
import { SessionPool, type PooledSession } from '../../server/pkcs11/session-pool';
import { SignExecutor, SignJobError, type SignTaskSink } from '../../server/pkcs11/sign-executor';
import { SignTask } from '../../server/pkcs11/sign-task';
import { RING_SLOTS } from '../../server/pkcs11/sign-thread-protocol';
import { buildFaultyModule, FaultController } from '../faulty-pkcs11/faulty-module';
import { testEnvironment } from '../support/test-environment';
import { testConfigDocument } from '../support/test-gateway';
import { verifySignature } from '../support/signatures';

class TestTask extends SignTask {
  readonly message = randomBytes(32);
  done = false;
  finished(): void {
    this.done = true;
  }
}

/** Collects finished tasks: the executor's sink. */
class Collector implements SignTaskSink {
  readonly tasks: TestTask[] = [];
  taskDone(task: SignTask): void {
    task.finished();
    this.tasks.push(task as TestTask);
  }
}

/** A pool whose sessions take a while to come: tasks pile up while a thread waits for one. */
class SlowPool extends SessionPool {
  acquired = 0;
  override async acquire(): Promise<PooledSession> {
    await sleep(40);
    this.acquired++;
    return super.acquire();
  }
}

const faults = new FaultController();
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Blocks the event loop: the sign threads run on, and the loop reads their answers only afterwards. */
function blockEventLoop(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end) { /* spin */ }
}

async function allDone(tasks: TestTask[], ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (tasks.some((t) => !t.done) && Date.now() < end) await sleep(5);
  const missing = tasks.filter((t) => !t.done).length;
  assert.equal(missing, 0, `${missing} of ${tasks.length} tasks never finished (a sign thread was not woken)`);
}

describe('sign executor', () => {
  let module: HsmModule;
  let pool: SessionPool;
  let key: ResolvedKey;
  let modulePath: string;
  const executors: SignExecutor[] = [];

  before(async () => {
    const env = await testEnvironment();
    modulePath = buildFaultyModule();
    Object.assign(process.env, { SOFTHSM2_CONF: env.softhsmConf, ...faults.env() });
    const config = buildConfig(testConfigDocument(env), env.stateDir, {});
    module = new HsmModule(modulePath);
    module.load();
    module.initialize();
    module.selectToken(config.pkcs11.token);
    const control = module.openSession();
    module.login(control, readPin(config.pkcs11.pin));
    key = resolveKeys(module, control, config.keys, false).keys.get('dev-ec') as ResolvedKey;
    pool = newPool(SessionPool);
  });

  function newPool<P extends SessionPool>(kind: new (...args: ConstructorParameters<typeof SessionPool>) => P): P {
    return new kind(
      { open: () => module.openSession(), close: (h) => module.closeSession(h), alive: (h) => module.sessionAlive(h) },
      module.generation, { min: 0, max: 4, acquireTimeoutMs: 10_000, maxWaiting: 10_000, validateAfterIdleMs: 30_000 }, { initial: 20, max: 100 }, () => undefined,
    );
  }

  after(async () => {
    faults.clear();
    for (const e of executors) await e.close();
    await pool.drain(1000);
    module.finalize();
    faults.dispose();
  });

  async function executor(threads: number, sink: SignTaskSink, sessions: SessionPool = pool): Promise<SignExecutor> {
    const e = new SignExecutor(
      { modulePath, threads, operationTimeoutMs: 10_000, queueTimeoutMs: 10_000, maxWaiting: 10_000, poolMax: 4 },
      { pool: () => sessions, unavailable: () => 'HSM unavailable' }, sink,
    );
    executors.push(e);
    await e.start();
    e.useGeneration(module.generation);
    return e;
  }

  function task(): TestTask {
    const t = new TestTask();
    t.key = key;
    t.algorithm = SignatureAlgorithm.ECDSA_SHA256;
    t.data = createHash('sha256').update(t.message).digest();
    t.deadline = performance.now() + 60_000;
    t.generation = module.generation;
    t.keyHandle = key.handle;
    t.rawSignatureLength = key.rawSignatureLength;
    return t;
  }

  function assertSigned(tasks: TestTask[]): void {
    for (const t of tasks) {
      assert.equal(t.error, undefined);
      assert.ok(t.signature && verifySignature(key.spki, SignatureAlgorithm.ECDSA_SHA256, t.message, t.signature), 'the signature verifies');
    }
  }

  it('jobs moved from the backlog into the ring wake a thread that went to sleep on an empty ring', async () => {
    faults.clear();
    const sink = new Collector();
    const e = await executor(1, sink);
    for (let round = 0; round < 5; round++) {
      // Three rings' worth: two wait in the backlog. With the event loop blocked, the thread runs
      // the first ring dry and sleeps; the backlog moves in only when the loop reads the answers.
      const tasks = Array.from({ length: 3 * RING_SLOTS }, task);
      for (const t of tasks) e.submit(t);
      blockEventLoop(100);
      await allDone(tasks);
      assertSigned(tasks);
    }
  });

  it('jobs that arrive while the thread waits for a session run once the session comes, with none lost', async () => {
    const sink = new Collector();
    const slow = newPool(SlowPool);
    const e = await executor(2, sink, slow);
    for (let round = 0; round < 3; round++) {
      // The threads sleep and hold no session; tasks trickle in while each one's session opens.
      await sleep(20);
      const tasks: TestTask[] = [];
      for (let i = 0; i < 6; i++) {
        const t = task();
        tasks.push(t);
        e.submit(t);
        await sleep(i % 2 ? 30 : 0);
      }
      await allDone(tasks);
      assertSigned(tasks);
    }
    assert.ok(slow.acquired >= 6, 'the threads waited for their sessions');
    await e.close();
    await slow.drain(1000);
  });

  it('after a job fails its session, the jobs queued behind it run on a fresh session, not on the failed one', async () => {
    const sink = new Collector();
    const e = await executor(1, sink);
    // Hold the thread on a first job so the rest queue behind it on the same session.
    faults.batch((c) => { c.delay('C_SignInit', 100); c.trace('C_OpenSession'); c.trace('C_Sign'); });
    faults.clearTrace();
    const tasks = Array.from({ length: 8 }, task);
    for (const t of tasks) e.submit(t);
    await sleep(30);
    faults.batch((c) => { c.clear(); c.trace('C_OpenSession'); c.trace('C_Sign'); c.fail('C_Sign', 'CKR_SESSION_HANDLE_INVALID', { once: true }); });
    await allDone(tasks);
    const failed = tasks.filter((t) => t.error);
    assert.equal(failed.length, 1, 'only the job that met the fault fails');
    assert.ok(failed[0].error instanceof SignJobError);
    assert.equal((failed[0].error as SignJobError).ckr, 'CKR_SESSION_HANDLE_INVALID');
    assertSigned(tasks.filter((t) => !t.error));
    const trace = faults.readTrace();
    const failedAt = trace.findIndex((t) => t.fn === 'C_Sign' && t.injected);
    assert.ok(failedAt >= 0);
    const reopened = trace.findIndex((t, i) => i > failedAt && t.fn === 'C_OpenSession');
    const nextSign = trace.findIndex((t, i) => i > failedAt && t.fn === 'C_Sign');
    assert.ok(reopened > failedAt && reopened < nextSign, 'a fresh session was opened before the thread signed again');
    faults.clear();
  });
});
