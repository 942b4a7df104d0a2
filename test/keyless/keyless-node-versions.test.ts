// The addon works on every supported Node line: the TLS and failure suites run again
// under Node 22 and 24 (OpenSSL 3.5), each with its own build of the addon.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';

import { testPki } from './support/keyless-kit';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const SUITES = ['keyless-tls.test.js', 'keyless-failures.test.js'].map((file) => path.join(__dirname, file));

for (const major of ['22', '24']) {
  test(`the keyless TLS and failure suites pass on node ${major}`, async () => {
    testPki(); // generate the shared PKI once, before the suites run in parallel
    const node = path.join(ROOT, 'node_modules', `node${major}`, 'bin', 'node');
    assert.ok(fs.existsSync(node), `${node} is missing (devDependency node${major})`);
    const addon = path.join(ROOT, 'client', 'keyless', 'native', 'build', `node-${major}`, 'keyless.node');
    assert.ok(fs.existsSync(addon), `${addon} is missing: run node scripts/build-addon.js --all`);
    // Without NODE_TEST_CONTEXT, which would make the child report to this runner.
    const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => name !== 'NODE_TEST_CONTEXT'));
    const { ok, output } = await new Promise<{ ok: boolean; output: string }>((resolve) => {
      execFile(node, ['--test', '--test-reporter=tap', ...SUITES], { timeout: 90_000, encoding: 'utf8', env }, (error, stdout, stderr) => {
        resolve({ ok: error === null, output: `${stdout}\n${stderr}` });
      });
    });
    assert.ok(ok, output);
    assert.match(output, /^# pass [1-9]\d*$/m);
    assert.match(output, /^# fail 0$/m);
  });
}
