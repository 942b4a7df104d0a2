// The keyless suites again, with every bridge in non-blocking mode (preloaded
// support/nonblocking-preload.js), on Node 20, 22 and 24. The through-the-gateway
// suite runs on Node 20 only: the gateway process (pkcs11js) is built for it.
// Each run must have really paused and resumed handshake jobs, and left none paused.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';

import type { NonBlockingStats } from '../../client/keyless/keyless-addon';
import { testPki } from './support/keyless-kit';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const PRELOAD = path.join(__dirname, 'support', 'nonblocking-preload.js');
const COMMON = ['keyless-tls.test.js', 'keyless-failures.test.js', 'keyless-concurrency.test.js', 'keyless-exit.test.js'];

function nodeFor(major: string): string {
  return major === '20' ? process.execPath : path.join(ROOT, 'node_modules', `node${major}`, 'bin', 'node');
}

function runSuites(major: string, files: string[]): Promise<{ ok: boolean; output: string; stats: NonBlockingStats[] }> {
  const node = nodeFor(major);
  assert.ok(fs.existsSync(node), `${node} is missing (devDependency node${major})`);
  assert.ok(fs.existsSync(path.join(ROOT, 'client', 'keyless', 'native', 'build', `node-${major}`, 'keyless.node')),
    `the addon for node ${major} is missing: run node scripts/build-addon.js --all`);
  const statsDir = fs.mkdtempSync(path.join(os.tmpdir(), 'hsmgw-nb-stats-'));
  // Without NODE_TEST_CONTEXT, which would make the child report to this runner.
  const env: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(process.env).filter(([name]) => name !== 'NODE_TEST_CONTEXT'));
  env['NODE_OPTIONS'] = `${env['NODE_OPTIONS'] ?? ''} --require ${PRELOAD}`.trim();
  env['HSMGW_NONBLOCKING_STATS_DIR'] = statsDir;
  const suites = files.map((file) => path.join(__dirname, file));
  return new Promise((resolve) => {
    execFile(node, ['--test', '--test-reporter=tap', ...suites], { timeout: 100_000, encoding: 'utf8', env, maxBuffer: 16 << 20 }, (error, stdout, stderr) => {
      const stats = fs.readdirSync(statsDir).map((file) => JSON.parse(fs.readFileSync(path.join(statsDir, file), 'utf8')) as NonBlockingStats);
      fs.rmSync(statsDir, { recursive: true, force: true });
      resolve({ ok: error === null, output: `${stdout}\n${stderr}`, stats });
    });
  });
}

function total(stats: NonBlockingStats[], field: keyof NonBlockingStats): number {
  return stats.reduce((sum, entry) => sum + entry[field], 0);
}

async function checkRun(major: string, files: string[]): Promise<void> {
  testPki(); // generate the shared PKI once, before the suites run in parallel
  const { ok, output, stats } = await runSuites(major, files);
  assert.ok(ok, output);
  assert.match(output, /^# pass [1-9]\d*$/m);
  assert.match(output, /^# fail 0$/m);
  assert.doesNotMatch(output, /non-blocking mode unavailable/);
  const fields: Array<keyof NonBlockingStats> = ['armed', 'asyncConnections', 'notKeyless', 'asyncSigns', 'blockingSigns', 'resumed', 'cancelled', 'timeouts'];
  console.log(`# node ${major}: ${fields.map((field) => `${field}=${total(stats, field)}`).join(' ')}`);
  // The handshakes really went through paused jobs, and none was left behind.
  assert.ok(total(stats, 'asyncSigns') >= 200, `async signatures: ${JSON.stringify(stats)}`);
  assert.ok(total(stats, 'resumed') >= 200, `resumed jobs: ${JSON.stringify(stats)}`);
  assert.equal(total(stats, 'pausedNow'), 0);
  assert.equal(total(stats, 'orphaned'), 0);
}

const name = (files: string[]): string => files.map((file) => file.replace('.test.js', '')).join(', ');
const WITH_GATEWAY = [...COMMON, 'keyless-gateway.test.js'];

test(`node 20: ${name(WITH_GATEWAY)} pass in non-blocking mode`, () => checkRun('20', WITH_GATEWAY));

for (const major of ['22', '24']) {
  test(`node ${major}: ${name(COMMON)} pass in non-blocking mode`, () => checkRun(major, COMMON));
}
