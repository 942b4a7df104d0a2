/**
 * Where the bench keeps its SoftHSM fixture. Its own directory, not the tests' (`npm test`
 * deletes and re-creates .hsm-gateway-test/ on every run). Import this module before
 * test/support/test-environment, which reads HSMGW_TEST_STATE_DIR when it loads.
 */
import * as os from 'node:os';
import * as path from 'node:path';

export const BENCH_STATE_DIR = path.resolve(process.env.HSMGW_BENCH_STATE_DIR ?? path.join(os.tmpdir(), 'hsm-gateway-bench-state'));
process.env.HSMGW_TEST_STATE_DIR = BENCH_STATE_DIR;
