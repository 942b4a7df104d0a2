/**
 * Smoke check of the fleet-resumption bench: `bench/run.js --quick --only resumption` runs end to
 * end, both configurations make every connection, and the shared one resumes (structure and
 * direction only: no timing is asserted).
 */
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { runQuickBench } from './support/quick-bench';

test('npm run bench -- --quick --only resumption reports signatures per 1,000 connections for both configurations', { timeout: 120_000 }, () => {
  const { stdout, report } = runQuickBench('resumption', 110_000);
  assert.match(stdout, /## Fleet resumption/);
  const { unshared, shared } = report.resumption.samples as Record<string, Array<{ connections: number; resumed: number; failures: number; signatures: number }>>;
  for (const s of [...unshared, ...shared]) {
    assert.equal(s.failures, 0);
    assert.equal(s.connections, report.resumption.connectionsPerRound);
  }
  assert.equal(unshared[0].resumed, 0, 'alternating proxies with their own keys never resume');
  assert.ok(shared[0].resumed > shared[0].connections / 2, 'shared keys resume most returning clients');
  assert.ok(shared[0].signatures < unshared[0].signatures);
  assert.ok(report.targets.some((t: { name: string }) => /shared ticket keys/.test(t.name)));
});
