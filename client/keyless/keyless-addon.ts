// Loads the native keyless addon: a prebuild for this platform and Node ABI, or one built from
// source (scripts/build-addon.js) for this Node major. Loaded at first keyless use only.
import * as fs from 'node:fs';
import * as path from 'node:path';

import { KEYLESS_PEM_LABEL } from './keyless-key-pem';

/**
 * One signature attempt, as recorded by the addon: its outcome is 'ok' or the reason label of
 * hsmgw_keyless_sign_failures_total (native provider.h, HSMGW_KEYLESS_REASONS). `seconds < 0`:
 * no round trip.
 */
export type SignSample = [keyName: string, outcome: string, seconds: number];

export type SignCallback = (requestId: number, keyName: string, algorithm: number, digest: Buffer) => void;

export interface KeylessAddon {
  /** The PEM label the native decoder accepts (provider.h kPemLabel). */
  readonly pemLabel: string;
  createBridge(bridgeId: string, timeoutMs: number, nonBlocking?: boolean): void;
  destroyBridge(bridgeId: string): void;
  /** Worker thread only: creates the threadsafe function that receives sign requests. */
  attachWorker(bridgeId: string, onSign: SignCallback): void;
  /** Worker thread only: stop receiving requests; outstanding ones fail at once. */
  detachWorker(): void;
  /** True while a signer worker is attached to the bridge (the TLS thread's view). */
  workerAttached(bridgeId: string): boolean;
  /** The answer to a request; on the main thread a paused handshake resumes inside this call. */
  completeSign(requestId: number, error: string | null, signature: Uint8Array | null): void;
  drainSamples(): SignSample[];
  // ---- non-blocking mode (main thread; see nonblocking-hooks.ts) ----
  /**
   * Creates the main-loop function through which paused handshakes are resumed, and sets the
   * function that receives their queued signatures once per loop turn (main-thread-signers.ts).
   */
  enableNonBlocking(resume: (connId: number) => void, dispatch: (batch: ReadonlyArray<string | number | Buffer>) => void): void;
  /** Around tls_wrap.wrap(): pairs the TLSWrap handle with the SSL created inside it. */
  beginWrap(): void;
  /** The connection id of the server SSL created since beginWrap(), or 0. */
  endWrap(): number;
  untrack(connId: number): void;
  /** Switches the connection to async mode; false if it is gone. */
  arm(connId: number): boolean;
  /** Cancels and unwinds a paused handshake job (before destroySSL frees the SSL). */
  release(connId: number): void;
  /** The caller continues handshakes now and takes their signatures with takeSignRequests() (no main-loop flush). */
  holdDispatch(): void;
  /** The signatures queued since the last dispatch, as dispatch() receives them. */
  takeSignRequests(): ReadonlyArray<string | number | Buffer>;
  nonBlockingStats(): NonBlockingStats;
  /** A worker-less bridge with a fresh local key that signs only in non-blocking mode. */
  createSelfCheckBridge(bridgeId: string): { certPem: string; spkiDer: Buffer };
  /** The peer of a connected Unix socket (SO_PEERCRED): for the agent's allow-list. */
  peerCredentials(fd: number): { pid: number; uid: number; gid: number };
}

/**
 * Process-wide counters of the non-blocking mode, by name. The names and their meaning are
 * listed once, in native nonblocking.h (HSMGW_NONBLOCKING_COUNTERS); a name not listed there
 * reads as undefined.
 */
export type NonBlockingStats = Readonly<Record<string, number>>;

const ADDON_FUNCTIONS = [
  'createBridge', 'destroyBridge', 'attachWorker', 'detachWorker', 'completeSign', 'workerAttached', 'drainSamples',
  'enableNonBlocking', 'beginWrap', 'endWrap', 'untrack', 'arm', 'release', 'holdDispatch', 'takeSignRequests', 'nonBlockingStats', 'createSelfCheckBridge', 'peerCredentials',
] as const;

let loaded: KeylessAddon | undefined;

/** What a prebuilt addon must match: platform, arch, libc (Linux) and the Node ABI (process.versions.modules). */
export interface AddonRuntime {
  platform: string;
  arch: string;
  /** 'glibc' or 'musl' on Linux, '' elsewhere. */
  libc: string;
  abi: string;
  nodeMajor: string;
}

export function currentRuntime(): AddonRuntime {
  let libc = '';
  if (process.platform === 'linux') {
    const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header;
    libc = header?.glibcVersionRuntime !== undefined ? 'glibc' : 'musl';
  }
  return { platform: process.platform, arch: process.arch, libc, abi: process.versions.modules, nodeMajor: process.versions.node.split('.')[0] ?? '' };
}

/** The file name of a prebuild: prebuilds/<platform>-<arch>/keyless.abi<ABI>[.<libc>].node. */
export function prebuildFile(runtime: AddonRuntime): string {
  return path.join('prebuilds', `${runtime.platform}-${runtime.arch}`, `keyless.abi${runtime.abi}${runtime.libc ? `.${runtime.libc}` : ''}.node`);
}

/**
 * The directories that may hold the addon: this package (@hsm-gateway/client: dist/client/keyless
 * is three levels down), the repository's client/ folder (the root build), and an installed
 * @hsm-gateway/client (the gateway package's own CLI).
 */
function packageDirs(): string[] {
  const up = path.resolve(__dirname, '..', '..', '..');
  const dirs = [up, path.join(up, 'client')];
  try {
    dirs.push(path.dirname(require.resolve('@hsm-gateway/client/package.json', { paths: [__dirname] })));
  } catch {
    // not installed as a package: the two above are all there is
  }
  return [...new Set(dirs)];
}

/**
 * Path of the addon for this runtime: HSM_GATEWAY_KEYLESS_ADDON, else a prebuild for the
 * platform, arch, libc and Node ABI, else one built from source for this Node major
 * (keyless/native/build/node-<major>/keyless.node). Throws one error naming all of them.
 */
export function keylessAddonPath(runtime: AddonRuntime = currentRuntime()): string {
  const override = process.env['HSM_GATEWAY_KEYLESS_ADDON'];
  if (override) return override;
  const candidates: string[] = [];
  for (const dir of packageDirs()) {
    candidates.push(path.join(dir, prebuildFile(runtime)));
    candidates.push(path.join(dir, 'keyless', 'native', 'build', `node-${runtime.nodeMajor}`, 'keyless.node'));
  }
  const found = candidates.find((candidate) => fs.existsSync(candidate));
  if (found === undefined) {
    const where = `${runtime.platform}-${runtime.arch}${runtime.libc ? ` (${runtime.libc})` : ''}, Node ${process.versions.node} (ABI ${runtime.abi})`;
    throw new Error(
      `keyless: no native addon for ${where}: @hsm-gateway/client ships prebuilds for linux-x64 (glibc) on Node 20, 22 and 24 (ABI 115, 127, 137). ` +
        'Build it from source (needs g++, make, python3 and Node\'s headers) with `npm rebuild @hsm-gateway/client --foreground-scripts` ' +
        '(or approve its install script: `npm install-scripts approve @hsm-gateway/client`), or point HSM_GATEWAY_KEYLESS_ADDON at a keyless.node. ' +
        `Looked for: ${candidates.join(', ')}. GatewayClient.sign() and getKey() work without it.`,
    );
  }
  return found;
}

/** Loads the addon once per thread (the OpenSSL provider is registered once per process). */
export function loadKeylessAddon(): KeylessAddon {
  if (loaded !== undefined) return loaded;
  const file = keylessAddonPath();
  const module = { exports: {} as Record<string, unknown> };
  process.dlopen(module, file);
  const exports = module.exports;
  for (const name of ADDON_FUNCTIONS) {
    if (typeof exports[name] !== 'function') throw new Error(`keyless: ${file} does not export ${name}()`);
  }
  // A stale or foreign build would decode no PEM this code writes: refuse it here, by name.
  if (exports['pemLabel'] !== KEYLESS_PEM_LABEL) {
    throw new Error(`keyless: ${file} decodes "${String(exports['pemLabel'])}" PEMs, this client writes "${KEYLESS_PEM_LABEL}": rebuild the addon (npm run build:addon)`);
  }
  loaded = exports as unknown as KeylessAddon;
  return loaded;
}
