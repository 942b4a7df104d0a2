/**
 * Smoke check of the benchmark suite: `bench/run.js --quick --only sign` runs end to end and
 * writes a report of the expected shape. Structure only: no timing is asserted.
 */
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { runQuickBench } from './support/quick-bench';

test('npm run bench -- --quick writes a report with every sign-path cell and the targets', { timeout: 120_000 }, () => {
  const { stdout, report } = runQuickBench('sign', 110_000);
  assert.match(stdout, /## Sign path/);
  assert.match(stdout, /## Targets/);
  assert.equal(report.mode, 'quick');
  assert.equal(typeof report.machine.nproc, 'number');
  const cells = report.sign.cells as Array<{ key: string; side: string; variant: string; concurrency: number; samples: Array<Record<string, number>> }>;
  for (const key of ['ecdsa-p256', 'rsa-2048']) {
    for (const variant of ['sync', 'async']) assert.ok(cells.some((c) => c.key === key && c.side === 'in-process' && c.variant === variant), `${key} in-process ${variant}`);
    for (const variant of ['unary', 'stream']) {
      for (const concurrency of [1, 64]) assert.ok(cells.some((c) => c.key === key && c.side === 'gateway' && c.variant === variant && c.concurrency === concurrency), `${key} ${variant}@${concurrency}`);
    }
  }
  for (const c of cells) {
    assert.ok(c.samples.length >= 1);
    for (const s of c.samples) {
      assert.equal(s.errors, 0, `${c.key} ${c.side} ${c.variant}@${c.concurrency}: errors`);
      assert.ok(s.ops > 0, `${c.key} ${c.side} ${c.variant}@${c.concurrency}: no operations`);
      for (const field of ['opsPerSec', 'p50Micros', 'p99Micros', 'clientCpuMicrosPerOp']) assert.equal(typeof s[field], 'number', field);
      if (c.side !== 'in-process') assert.equal(typeof s.gatewayCpuMicrosPerOp, 'number');
    }
  }
  assert.equal(report.sign.derived.length, 2);
  assert.ok(report.sign.soak.rssSamples.length >= 1);
  // Issue 13's: P-256 ratio, CPU stream and unary, added p50; RSA-2048 ratio; client RSA CPU; RSS.
  assert.ok(report.targets.length >= 7);
  for (const name of ['SignStream@64 throughput ≥ 0.6x in-process (ecdsa-p256)', 'SignStream@64 throughput ≥ 0.95x in-process (rsa-2048)', 'added p50 at 1 in flight ≤ 200 µs, SignStream (ecdsa-p256)']) {
    assert.ok(report.targets.some((t: { name: string }) => t.name === name), name);
  }
  for (const t of report.targets) assert.ok(t.met === true || t.met === false || t.met === undefined, t.name);
});

test('npm run bench -- --quick --only handshake measures every server, mode and round trip, the paced cells and the RSS soak', { timeout: 240_000 }, () => {
  const { stdout, report } = runQuickBench('handshake', 230_000);
  assert.match(stdout, /## Handshake path/);
  const cells = report.handshake.cells as Array<{ key: string; server: string; mode: string; rttMs: number; samples: Array<Record<string, number>> }>;
  for (const key of ['ecdsa-p256', 'rsa-2048']) {
    assert.ok(cells.some((c) => c.key === key && c.server === 'pem' && c.mode === 'pem'), `${key} PEM`);
    for (const rttMs of [0, 1, 5]) {
      for (const [server, mode] of [['auto', 'non-blocking'], ['non-blocking', 'non-blocking'], ['blocking', 'blocking']]) {
        assert.ok(cells.some((c) => c.key === key && c.server === server && c.mode === mode && c.rttMs === rttMs), `${key} ${server} +${rttMs} ms (${mode})`);
      }
    }
  }
  for (const c of cells) {
    for (const s of c.samples) {
      assert.ok(s.handshakesPerSec > 0, `${c.key} ${c.server} +${c.rttMs}: no handshakes`);
      assert.equal(s.clientErrors, 0, `${c.key} ${c.server} +${c.rttMs}: TLS errors`);
      assert.ok(s.proxyCpuMicros > 0 && s.proxyMainThreadMicros > 0, `${c.key} ${c.server}: proxy CPU`);
    }
  }
  const paced = report.handshake.paced as Array<{ samples: Array<{ completedPerSec: number; loopDelayP99Ms: number }> }>;
  assert.equal(paced.length, 10);
  for (const c of paced) for (const s of c.samples) assert.ok(s.completedPerSec > 0 && s.loopDelayP99Ms > 0);
  assert.ok(report.handshake.rssSoak.handshakes >= 4000);
  const names = (report.targets as Array<{ name: string }>).map((t) => t.name).join('\n');
  for (const pattern of [/proxy CPU per full handshake.*ecdsa-p256/, /proxy CPU per full handshake.*rsa-2048/, /rate at \+5 ms/, /event-loop delay p99/, /RSS flat/]) assert.match(names, pattern);
});

test('npm run bench -- --quick --only nginx measures nginx with a PEM key, a keyless key and libp11, with no failed handshake', { timeout: 120_000 }, () => {
  const { stdout, report } = runQuickBench('nginx', 110_000);
  assert.match(stdout, /## nginx/);
  // CI installs nginx, libssl-dev and libengine-pkcs11-openssl: a skipped section is a failure here.
  assert.equal(report.nginx.skipped, undefined, report.nginx.skipped);
  const cells = report.nginx.cells as Array<{ key: string; variant: string; failures: number; samples: Array<Record<string, number>> }>;
  for (const key of ['ecdsa-p256', 'rsa-2048']) {
    for (const variant of ['pem', 'keyless', 'libp11']) {
      const cell = cells.find((c) => c.key === key && c.variant === variant);
      assert.ok(cell, `${key} ${variant}`);
      assert.equal(cell.failures, 0, `${key} ${variant}: failed handshakes`);
      for (const s of cell.samples) {
        assert.ok(s.handshakesPerSec > 0, `${key} ${variant}: no handshakes`);
        assert.ok(s.nginxCpuMicros > 0, `${key} ${variant}: no nginx CPU`);
        // The keyless worker waits for the agent about once per handshake; a PEM key never waits.
        if (variant === 'keyless') assert.ok(s.agentCpuMicros > 0 && s.nginxSleepsPerHandshake > 0.5, `${key} keyless: the agent did not sign`);
      }
    }
  }
  assert.equal(report.targets.filter((t: { name: string }) => t.name.startsWith('nginx CPU')).length, 4);
});
