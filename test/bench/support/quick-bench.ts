// Runs `bench/run.js --quick --only SECTION` as `npm run bench` would, on the tests' SoftHSM
// fixture (no key generation), and returns its stdout and the JSON report it wrote.
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const RUN = path.resolve(__dirname, '..', '..', '..', 'bench', 'run.js');

export interface QuickBench {
  stdout: string;
  /** bench/results latest.json as parsed: each test checks the fields of its section. */
  report: ReturnType<typeof JSON.parse>;
}

export function runQuickBench(section: string, timeoutMs: number): QuickBench {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-smoke-'));
  try {
    const env = { ...process.env };
    if (env.HSMGW_TEST_STATE_DIR) env.HSMGW_BENCH_STATE_DIR = env.HSMGW_TEST_STATE_DIR;
    const run = spawnSync(process.execPath, [RUN, '--quick', '--only', section, '--out', out], { env, encoding: 'utf8', timeout: timeoutMs });
    assert.equal(run.status, 0, `bench failed:\n${run.stderr}`);
    return { stdout: run.stdout, report: JSON.parse(fs.readFileSync(path.join(out, 'latest.json'), 'utf8')) };
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
}
