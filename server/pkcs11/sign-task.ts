import type { ResolvedKey } from './key-store';

const EMPTY = Buffer.alloc(0);

/**
 * One signature request on its way through the HSM layer and a sign thread, and back. The same
 * object carries it all the way (no promise or closure per request): the layer that created it
 * learns the outcome through `finished()`, with either `signature` or `error` set.
 */
export abstract class SignTask {
  /** Set by the caller. */
  key!: ResolvedKey;
  algorithm = 0;
  /** The digest (or the message, for EdDSA). */
  data: Buffer = EMPTY;
  /** performance.now() time after which the HSM must not be asked. */
  deadline = 0;

  /** Set by the HSM layer for each attempt: the handles' module generation and the key handle in it. */
  generation = 0;
  keyHandle: Buffer = EMPTY;
  rawSignatureLength = 0;
  attempt = 0;
  /** performance.now() when the executor queued it. */
  queuedAt = 0;

  /** The outcome. */
  signature: Buffer | undefined;
  error: Error | undefined;
  /** Time queued before a sign thread ran it; time inside C_SignInit + C_Sign (last attempt). */
  waitSeconds = 0;
  hsmSeconds = 0;

  /** Called once, when `signature` or `error` is set for good. */
  abstract finished(): void;
}
