/**
 * The CI soak: scripts/soak.ts for 40 s (plus start-up and drain, under 60 s) against a gateway on
 * the fault-injecting module. Every request answered, every success verified, only honest codes
 * under faults and exact codes for invalid requests, full service in the fault-free tail, RSS
 * stable, and the pool back to baseline. Longer runs: `npm run soak -- --seconds 600`.
 * Replay a failure: HSMGW_SOAK_SEED=<seed> node --test dist/test/server/soak.test.js
 */
import { it } from 'node:test';
import * as assert from 'node:assert/strict';
import { formatReport, runSoak } from '../../scripts/soak';

const SECONDS = 40;

it(`soak: ${SECONDS} s of mixed load with random HSM faults, every invariant holds`, { timeout: 60_000 }, async () => {
  const started = Date.now();
  const seed = process.env.HSMGW_SOAK_SEED !== undefined ? Number(process.env.HSMGW_SOAK_SEED) : undefined;
  const report = await runSoak({ seconds: SECONDS, seed, log: (line) => console.log(line) });
  console.log(formatReport(report).split('\n').map((l) => `# ${l}`).join('\n'));
  assert.deepEqual(report.violations, [], `seed ${report.seed}: ${report.violations.length} violations`);
  assert.equal(report.answered, report.sent);
  assert.ok(report.sent > 2000, `enough load: ${report.sent} requests`);
  // The run must have exercised what it claims: successes, refusals, faults, and their honest answers.
  const outcome = (k: string): number => report.outcomes[k] ?? 0;
  assert.ok(outcome('Sign valid OK') > 0 && outcome('SignStream valid OK') > 0);
  assert.equal(report.verified, outcome('Sign valid OK') + outcome('SignStream valid OK'));
  assert.ok(outcome('Sign invalid PERMISSION_DENIED') + outcome('SignStream invalid INVALID_ARGUMENT') > 0);
  assert.ok(Object.values(report.faults).reduce((a, b) => a + b, 0) >= 5, `faults injected: ${JSON.stringify(report.faults)}`);
  assert.deepEqual(report.end, { inUse: 0, waiting: 0, inFlight: 0, ready: true });
  assert.ok(Date.now() - started < 58_000, 'the CI soak stays under a minute');
});
