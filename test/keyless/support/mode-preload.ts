// Preloaded (node --require) by keyless-node-matrix.test.ts to run existing keyless suites in
// a given mode: every KeylessBridge (GatewayClient's too) starts with mode
// $HSMGW_KEYLESS_MODE ('blocking' or 'non-blocking'), and must really get it. At exit the
// process's non-blocking counters are written to $HSMGW_NONBLOCKING_STATS_DIR/<pid>.json
// for the parent test.
import * as fs from 'node:fs';
import * as path from 'node:path';

import { loadKeylessAddon } from '../../../client/keyless/keyless-addon';
import { KeylessBridge, type KeylessBridgeOptions, type KeylessMode } from '../../../client/keyless/keyless-bridge';

const start = KeylessBridge.start.bind(KeylessBridge);
const mode = process.env['HSMGW_KEYLESS_MODE'] as KeylessMode | undefined;
let used = false;

KeylessBridge.start = async (options: KeylessBridgeOptions): Promise<KeylessBridge> => {
  // In async mode every signature of a burst is in flight at once: 200 concurrent
  // handshakes start 200 `openssl pkeyutl` processes in the test signer, which on a
  // loaded 2-core machine can take longer than the default 2 s. Suites that test
  // timeouts pass their own signTimeoutMs.
  const forced = mode === undefined || options.mode === 'blocking' ? {} : { mode, nonBlocking: undefined };
  const bridge = await start({ ...options, signTimeoutMs: options.signTimeoutMs ?? 10_000, ...forced });
  if (mode !== undefined && options.mode !== 'blocking' && bridge.mode !== mode) {
    await bridge.close();
    throw new Error(`mode-preload: the bridge got mode ${bridge.mode}, not ${mode}`);
  }
  used = true;
  return bridge;
};

process.on('exit', () => {
  const dir = process.env['HSMGW_NONBLOCKING_STATS_DIR'];
  if (dir === undefined || !used) return;
  fs.writeFileSync(path.join(dir, `${process.pid}.json`), JSON.stringify(loadKeylessAddon().nonBlockingStats()));
});
