// The keyless suites on every supported Node line, in each mode:
//  - Node 22 and 24 (OpenSSL 3.5), each with its own build of the addon: the TLS, failure,
//    concurrency, exit and through-the-gateway suites in the default mode (non-blocking);
//  - Node 20 (whose default-mode run is `npm test` itself): the same suites with every bridge
//    forced to the blocking path, the fallback of the default mode.
// The gateway always runs on Node 20, whose ABI its pkcs11js is built for. Each run must show
// the mode at work: paused and resumed jobs (none left paused) or blocking signatures only.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';

import type { NonBlockingStats } from '../../client/keyless/keyless-addon';
import type { KeylessMode } from '../../client/keyless/keyless-options';
import { testPki } from './support/keyless-kit';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const PRELOAD = path.join(__dirname, 'support', 'mode-preload.js');
const SUITES = ['keyless-tls.test.js', 'keyless-failures.test.js', 'keyless-concurrency.test.js', 'keyless-exit.test.js', 'keyless-gateway.test.js'];

function nodeFor(major: string): string {
  return major === '20' ? process.execPath : path.join(ROOT, 'node_modules', `node${major}`, 'bin', 'node');
}

function runSuites(major: string, mode: Exclude<KeylessMode, 'auto'>): Promise<{ ok: boolean; output: string; stats: NonBlockingStats[] }> {
  const node = nodeFor(major);
  assert.ok(fs.existsSync(node), `${node} is missing (devDependency node${major})`);
  assert.ok(fs.existsSync(path.join(ROOT, 'client', 'keyless', 'native', 'build', `node-${major}`, 'keyless.node')),
    `the addon for node ${major} is missing: run node scripts/build-addon.js --all`);
  const statsDir = fs.mkdtempSync(path.join(os.tmpdir(), 'hsmgw-nb-stats-'));
  // Without NODE_TEST_CONTEXT, which would make the child report to this runner.
  const env: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(process.env).filter(([name]) => name !== 'NODE_TEST_CONTEXT'));
  env['NODE_OPTIONS'] = `${env['NODE_OPTIONS'] ?? ''} --require ${PRELOAD}`.trim();
  env['HSMGW_KEYLESS_MODE'] = mode;
  env['HSMGW_NONBLOCKING_STATS_DIR'] = statsDir;
  env['HSMGW_GATEWAY_NODE'] = process.execPath;
  const suites = SUITES.map((file) => path.join(__dirname, file));
  return new Promise((resolve) => {
    execFile(node, ['--test', '--test-reporter=tap', ...suites], { timeout: 150_000, encoding: 'utf8', env, maxBuffer: 16 << 20 }, (error, stdout, stderr) => {
      const stats = fs.readdirSync(statsDir).map((file) => JSON.parse(fs.readFileSync(path.join(statsDir, file), 'utf8')) as NonBlockingStats);
      fs.rmSync(statsDir, { recursive: true, force: true });
      resolve({ ok: error === null, output: `${stdout}\n${stderr}`, stats });
    });
  });
}

function total(stats: NonBlockingStats[], field: keyof NonBlockingStats): number {
  return stats.reduce((sum, entry) => sum + entry[field], 0);
}

async function checkRun(major: string, mode: Exclude<KeylessMode, 'auto'>): Promise<void> {
  testPki(); // generate the shared PKI once, before the suites run in parallel
  const { ok, output, stats } = await runSuites(major, mode);
  assert.ok(ok, output);
  assert.match(output, /^# pass [1-9]\d*$/m);
  assert.match(output, /^# fail 0$/m);
  assert.doesNotMatch(output, /non-blocking mode unavailable/);
  const fields: Array<keyof NonBlockingStats> = ['armed', 'asyncConnections', 'notKeyless', 'asyncSigns', 'blockingSigns', 'resumed', 'cancelled', 'timeouts'];
  console.log(`# node ${major} ${mode}: ${fields.map((field) => `${field}=${total(stats, field)}`).join(' ')}`);
  if (mode === 'non-blocking') {
    // The handshakes really went through paused jobs, and none was left behind.
    assert.ok(total(stats, 'asyncSigns') >= 200, `async signatures: ${JSON.stringify(stats)}`);
    assert.ok(total(stats, 'resumed') >= 200, `resumed jobs: ${JSON.stringify(stats)}`);
  } else {
    assert.equal(total(stats, 'asyncSigns'), 0, 'no handshake paused in blocking mode');
    assert.equal(total(stats, 'armed'), 0);
  }
  assert.equal(total(stats, 'pausedNow'), 0);
  assert.equal(total(stats, 'orphaned'), 0);
}

const names = SUITES.map((file) => file.replace('.test.js', '')).join(', ');

for (const major of ['22', '24']) {
  test(`node ${major}: ${names} pass in the default (non-blocking) mode`, () => checkRun(major, 'non-blocking'));
}
test(`node 20: ${names} pass with every bridge on the blocking path`, () => checkRun('20', 'blocking'));
