// The process ends promptly and cleanly while remote signatures are outstanding.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { test } from 'node:test';

import { testPki } from './support/keyless-kit';

const CHILD = path.join(__dirname, 'support', 'exit-child.js');

for (const mode of ['exit', 'drain']) {
  test(`process ${mode === 'exit' ? 'exit' : 'end with an open bridge'} while a sign is outstanding`, async () => {
    testPki();
    const started = Date.now();
    const { code, signal, stdout } = await new Promise<{ code: number | null; signal: string | null; stdout: string }>((resolve) => {
      const child = execFile(process.execPath, [CHILD, mode], { timeout: 10_000, encoding: 'utf8' }, (_error, out) => {
        resolve({ code: child.exitCode, signal: child.signalCode, stdout: out });
      });
    });
    assert.equal(signal, null);
    assert.equal(code, 0);
    assert.match(stdout, /handshake failed as expected/);
    assert.ok(Date.now() - started < 5000, `took ${Date.now() - started} ms`);
  });
}
