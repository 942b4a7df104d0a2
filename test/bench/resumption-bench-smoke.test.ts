/**
 * Smoke check of the fleet-resumption bench: `bench/run.js --quick --only resumption` runs end to
 * end, both configurations make every connection, and the shared one resumes (structure and
 * direction only: no timing is asserted).
 */
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';

const RUN = path.resolve(__dirname, '..', '..', 'bench', 'run.js');

test('npm run bench -- --quick --only resumption reports signatures per 1,000 connections for both configurations', { timeout: 120_000 }, () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-resumption-'));
  try {
    const env = { ...process.env };
    if (env.HSMGW_TEST_STATE_DIR) env.HSMGW_BENCH_STATE_DIR = env.HSMGW_TEST_STATE_DIR;
    const run = spawnSync(process.execPath, [RUN, '--quick', '--only', 'resumption', '--out', out], { env, encoding: 'utf8', timeout: 110_000 });
    assert.equal(run.status, 0, `bench failed:\n${run.stderr}`);
    assert.match(run.stdout, /## Fleet resumption/);
    const report = JSON.parse(fs.readFileSync(path.join(out, 'latest.json'), 'utf8'));
    const { unshared, shared } = report.resumption.samples as Record<string, Array<{ connections: number; resumed: number; failures: number; signatures: number }>>;
    for (const s of [...unshared, ...shared]) {
      assert.equal(s.failures, 0);
      assert.equal(s.connections, report.resumption.connectionsPerRound);
    }
    assert.equal(unshared[0].resumed, 0, 'alternating proxies with their own keys never resume');
    assert.ok(shared[0].resumed > shared[0].connections / 2, 'shared keys resume most returning clients');
    assert.ok(shared[0].signatures < unshared[0].signatures);
    assert.ok(report.targets.some((t: { name: string }) => /shared ticket keys/.test(t.name)));
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
});
