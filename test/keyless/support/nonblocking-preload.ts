// Preloaded (node --require) to run existing keyless suites in non-blocking mode:
// every KeylessBridge (GatewayClient's too) starts with nonBlocking: true and must really get it (a
// self-check fallback fails the start). At exit the process's non-blocking counters
// are written to $HSMGW_NONBLOCKING_STATS_DIR/<pid>.json for the parent test.
import * as fs from 'node:fs';
import * as path from 'node:path';

import { loadKeylessAddon } from '../../../client/keyless/keyless-addon';
import { KeylessBridge, type KeylessBridgeOptions } from '../../../client/keyless/keyless-bridge';

const start = KeylessBridge.start.bind(KeylessBridge);
let used = false;

KeylessBridge.start = async (options: KeylessBridgeOptions): Promise<KeylessBridge> => {
  // In async mode every signature of a burst is in flight at once: 200 concurrent
  // handshakes start 200 `openssl pkeyutl` processes in the test signer, which on a
  // loaded 2-core machine can take longer than the default 2 s. Suites that test
  // timeouts pass their own signTimeoutMs.
  const bridge = await start({ ...options, signTimeoutMs: options.signTimeoutMs ?? 10_000, nonBlocking: true });
  if (!bridge.nonBlocking) {
    await bridge.close();
    throw new Error('nonblocking-preload: the bridge fell back to blocking mode');
  }
  used = true;
  return bridge;
};

process.on('exit', () => {
  const dir = process.env['HSMGW_NONBLOCKING_STATS_DIR'];
  if (dir === undefined || !used) return;
  fs.writeFileSync(path.join(dir, `${process.pid}.json`), JSON.stringify(loadKeylessAddon().nonBlockingStats()));
});
