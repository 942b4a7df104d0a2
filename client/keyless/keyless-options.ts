// Validation of KeylessBridge options, in one place, with errors that name the option.
import * as path from 'node:path';

import { isRemoteSigner, type RemoteSigner } from './remote-signer';

/**
 * How server handshakes wait for their remote signature (docs/NON-BLOCKING.md):
 * - 'non-blocking': the handshake pauses and the event loop keeps serving; the signature is
 *   sent from the event loop. Relies on Node internals checked by a start-up self-check; the
 *   bridge refuses to start if the check fails.
 * - 'blocking': the handshake thread waits for a signer worker thread (at most signTimeoutMs).
 * - 'auto' (default): 'non-blocking' when the self-check passes, otherwise 'blocking' with one
 *   warning line.
 * Client connections (tls.connect with a keyless key) and the few server connections the
 * non-blocking mode cannot pause always use the blocking path.
 */
export type KeylessMode = 'auto' | 'non-blocking' | 'blocking';
export const KEYLESS_MODES: readonly KeylessMode[] = ['auto', 'non-blocking', 'blocking'];

export interface KeylessBridgeOptions {
  /** Absolute path of a .js module exporting `createRemoteSigner(options)`. */
  signerModule: string;
  /** Passed to createRemoteSigner; must be structured-cloneable (the worker gets a copy). */
  signerOptions?: unknown;
  /** Longest a handshake waits for one remote signature. Default 2000 ms. */
  signTimeoutMs?: number;
  /** Default 'auto'. */
  mode?: KeylessMode;
  /**
   * Deprecated, use `mode`: true is 'auto', false is 'blocking'. Ignored when `mode` is set
   * (setting both to values that disagree is an error).
   */
  nonBlocking?: boolean;
  /**
   * The signer the non-blocking mode uses on this thread. Default: one made here from
   * signerModule and signerOptions (the worker, used by the blocking path, makes its own).
   * The bridge does not close a signer it was given.
   */
  signer?: RemoteSigner;
}

export interface ValidatedBridgeOptions {
  signerModule: string;
  signerOptions: unknown;
  signTimeoutMs: number;
  mode: KeylessMode;
  signer: RemoteSigner | undefined;
}

export const DEFAULT_SIGN_TIMEOUT_MS = 2000;
const MAX_SIGN_TIMEOUT_MS = 600_000;

/** The mode named by `mode` and the deprecated boolean; `owner` prefixes the error messages. */
export function resolveKeylessMode(mode: unknown, nonBlocking: unknown, names: { mode: string; nonBlocking: string; owner: string }): KeylessMode {
  if (mode !== undefined && !KEYLESS_MODES.includes(mode as KeylessMode)) {
    throw new TypeError(`${names.owner} option ${names.mode} must be one of ${KEYLESS_MODES.map((m) => `'${m}'`).join(', ')}`);
  }
  if (nonBlocking !== undefined && typeof nonBlocking !== 'boolean') {
    throw new TypeError(`${names.owner} option ${names.nonBlocking} must be a boolean`);
  }
  if (mode === undefined) return nonBlocking === false ? 'blocking' : 'auto';
  if (nonBlocking !== undefined && (nonBlocking === true) !== (mode !== 'blocking')) {
    throw new TypeError(`${names.owner} options ${names.mode} ('${String(mode)}') and ${names.nonBlocking} (deprecated, ${String(nonBlocking)}) disagree; set only ${names.mode}`);
  }
  return mode as KeylessMode;
}

export function validateKeylessBridgeOptions(options: KeylessBridgeOptions): ValidatedBridgeOptions {
  if (typeof options !== 'object' || options === null) throw new TypeError('KeylessBridge options must be an object');
  const { signerModule, signerOptions, signTimeoutMs = DEFAULT_SIGN_TIMEOUT_MS, signer } = options;
  if (typeof signerModule !== 'string' || !path.isAbsolute(signerModule)) {
    throw new TypeError('KeylessBridge option signerModule must be an absolute path to a .js module');
  }
  if (!Number.isInteger(signTimeoutMs) || signTimeoutMs < 1 || signTimeoutMs > MAX_SIGN_TIMEOUT_MS) {
    throw new RangeError(`KeylessBridge option signTimeoutMs must be an integer from 1 to ${MAX_SIGN_TIMEOUT_MS}`);
  }
  const mode = resolveKeylessMode(options.mode, options.nonBlocking, { mode: 'mode', nonBlocking: 'nonBlocking', owner: 'KeylessBridge' });
  if (signer !== undefined && !isRemoteSigner(signer)) throw new TypeError('KeylessBridge option signer must be an object with sign()');
  try {
    structuredClone(signerOptions);
  } catch (error) {
    throw new TypeError(`KeylessBridge option signerOptions must be structured-cloneable (${error instanceof Error ? error.message : String(error)})`);
  }
  return { signerModule, signerOptions, signTimeoutMs, mode, signer };
}
