#!/usr/bin/env node
// `npm test`: prepares the shared test fixture the same way `npm start` bootstraps the embedded
// default (a fresh SoftHSM2 token in .hsm-gateway-test/), then runs every compiled test file
// with node's test runner. Extra arguments are passed to `node --test` (e.g. a file path).
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const dist = path.join(root, 'dist', 'test');
const stateDir = process.env.HSMGW_TEST_STATE_DIR || path.join(root, '.hsm-gateway-test');

function findTests(dir) {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return findTests(p);
    return e.name.endsWith('.test.js') ? [p] : [];
  }).sort();
}

async function main() {
  if (!fs.existsSync(path.join(dist, 'support', 'test-environment.js'))) {
    console.error('run-tests: dist/ is missing; run `npm run build` first (npm ci does it).');
    process.exit(2);
  }
  fs.rmSync(stateDir, { recursive: true, force: true });
  const started = Date.now();
  const { prepareTestEnvironment } = require(path.join(dist, 'support', 'test-environment.js'));
  await prepareTestEnvironment();
  console.log(`# test fixture ready in ${stateDir} (${Date.now() - started} ms)`);

  const args = process.argv.slice(2);
  const files = args.some((a) => !a.startsWith('-')) ? [] : findTests(dist);
  const tapFile = path.join(stateDir, 'results.tap');
  const result = spawnSync(process.execPath, [
    '--test', '--test-concurrency=1',
    '--test-reporter=spec', '--test-reporter-destination=stdout',
    '--test-reporter=tap', `--test-reporter-destination=${tapFile}`,
    ...args, ...files,
  ], { stdio: 'inherit', env: { ...process.env, HSMGW_TEST_STATE_DIR: stateDir } });
  // One plain closing line for CI, from the runner's own TAP summary.
  const tap = fs.existsSync(tapFile) ? fs.readFileSync(tapFile, 'utf8') : '';
  const count = (name) => Number((new RegExp(`^# ${name} (\\d+)$`, 'm').exec(tap) || [])[1] || 0);
  console.log(`${count('pass')} passed, ${count('fail') + count('cancelled')} failed, ${count('skipped')} skipped`);
  process.exit(result.status ?? 1);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
