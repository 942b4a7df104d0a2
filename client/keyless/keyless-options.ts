// Validation of KeylessBridge options, in one place, with errors that name the option.
import * as path from 'node:path';

export interface KeylessBridgeOptions {
  /** Absolute path of a .js module exporting `createRemoteSigner(options)`. */
  signerModule: string;
  /** Passed to createRemoteSigner in the worker; must be structured-cloneable. */
  signerOptions?: unknown;
  /** Longest a handshake waits for one remote signature. Default 2000 ms. */
  signTimeoutMs?: number;
  /**
   * Opt-in: server handshakes do not block the event loop while the remote signature
   * is in flight (docs/NON-BLOCKING.md). Relies on Node internals; checked at start-up,
   * with a fallback to the blocking bridge and one warning line. Default false.
   */
  nonBlocking?: boolean;
}

export interface ValidatedBridgeOptions {
  signerModule: string;
  signerOptions: unknown;
  signTimeoutMs: number;
  nonBlocking: boolean;
}

export const DEFAULT_SIGN_TIMEOUT_MS = 2000;
const MAX_SIGN_TIMEOUT_MS = 600_000;

export function validateKeylessBridgeOptions(options: KeylessBridgeOptions): ValidatedBridgeOptions {
  if (typeof options !== 'object' || options === null) throw new TypeError('KeylessBridge options must be an object');
  const { signerModule, signerOptions, signTimeoutMs = DEFAULT_SIGN_TIMEOUT_MS, nonBlocking = false } = options;
  if (typeof signerModule !== 'string' || !path.isAbsolute(signerModule)) {
    throw new TypeError('KeylessBridge option signerModule must be an absolute path to a .js module');
  }
  if (!Number.isInteger(signTimeoutMs) || signTimeoutMs < 1 || signTimeoutMs > MAX_SIGN_TIMEOUT_MS) {
    throw new RangeError(`KeylessBridge option signTimeoutMs must be an integer from 1 to ${MAX_SIGN_TIMEOUT_MS}`);
  }
  if (typeof nonBlocking !== 'boolean') throw new TypeError('KeylessBridge option nonBlocking must be a boolean');
  try {
    structuredClone(signerOptions);
  } catch (error) {
    throw new TypeError(`KeylessBridge option signerOptions must be structured-cloneable (${error instanceof Error ? error.message : String(error)})`);
  }
  return { signerModule, signerOptions, signTimeoutMs, nonBlocking };
}
