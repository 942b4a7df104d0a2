/** Messages between the event loop and the sign threads. Plain data: they are structured-cloned. */

export interface SignThreadInit {
  modulePath: string;
  /** [0]: the module generation jobs may use; a job of another one is refused unrun. 0 while re-initializing. */
  generation: Int32Array;
}

export interface SignJob {
  id: number;
  session: Uint8Array;
  key: Uint8Array;
  algorithm: number;
  /** The digest (or the message, for EdDSA). */
  data: Uint8Array;
  rawSignatureLength: number;
  /** The module generation the session and key handles belong to. */
  generation: number;
}

export type SignResult =
  | { id: number; ok: true; signature: Uint8Array; hsmNanos: number }
  | { id: number; ok: false; ckr: string | undefined; message: string; hsmNanos: number; stale?: true };
