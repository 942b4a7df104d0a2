import * as pkcs11js from 'pkcs11js';

/** The CKR name of a pkcs11js error ('CKR_DEVICE_ERROR'), or undefined for any other error. */
export function ckrName(err: unknown): string | undefined {
  if (err instanceof pkcs11js.Pkcs11Error) return err.message.split(':')[0];
  if (err instanceof Error && /^CKR_[A-Z_]+/.test(err.message)) return /^CKR_[A-Z_]+/.exec(err.message)?.[0];
  return undefined;
}

/** The session is gone but the token is fine: discard the session, retry on a fresh one. */
const SESSION_LOST = new Set(['CKR_SESSION_HANDLE_INVALID', 'CKR_SESSION_CLOSED']);
/** The token forgot our login (another process logged out, token reset): log in again. */
const LOGIN_LOST = new Set(['CKR_USER_NOT_LOGGED_IN']);
/** The device or the library is down: stop serving and reconnect. */
const DEVICE_DOWN = new Set([
  'CKR_DEVICE_ERROR', 'CKR_DEVICE_REMOVED', 'CKR_TOKEN_NOT_PRESENT', 'CKR_TOKEN_NOT_RECOGNIZED',
  'CKR_CRYPTOKI_NOT_INITIALIZED', 'CKR_DEVICE_MEMORY', 'CKR_GENERAL_ERROR', 'CKR_SLOT_ID_INVALID',
]);
/** The key object changed under us (token re-initialised, key deleted): re-resolve handles. */
const KEY_LOST = new Set(['CKR_KEY_HANDLE_INVALID', 'CKR_OBJECT_HANDLE_INVALID']);
/** The request itself cannot be served with this key (wrong size, mechanism unsupported). */
const REQUEST_REJECTED = new Set(['CKR_DATA_LEN_RANGE', 'CKR_DATA_INVALID', 'CKR_KEY_TYPE_INCONSISTENT', 'CKR_MECHANISM_INVALID', 'CKR_MECHANISM_PARAM_INVALID', 'CKR_KEY_FUNCTION_NOT_PERMITTED', 'CKR_KEY_SIZE_RANGE']);

export type FailureClass = 'session-lost' | 'login-lost' | 'device-down' | 'key-lost' | 'request-rejected' | 'other';

export function classifyCkr(ckr: string | undefined): FailureClass {
  if (ckr === undefined) return 'other';
  if (SESSION_LOST.has(ckr)) return 'session-lost';
  if (LOGIN_LOST.has(ckr)) return 'login-lost';
  if (DEVICE_DOWN.has(ckr)) return 'device-down';
  if (KEY_LOST.has(ckr)) return 'key-lost';
  if (REQUEST_REJECTED.has(ckr)) return 'request-rejected';
  return 'other';
}

/** PKCS#11 v2.40 CK_STATE values; pkcs11js does not export them. */
export const CKS_RO_USER_FUNCTIONS = 1;
export const CKS_RW_USER_FUNCTIONS = 3;

export function isLoggedInState(state: number): boolean {
  return state === CKS_RO_USER_FUNCTIONS || state === CKS_RW_USER_FUNCTIONS;
}

/** Runs a PKCS#11 call, treating the listed CKR names as success. */
export function tolerate<T>(call: () => T, ...okCodes: string[]): T | undefined {
  try {
    return call();
  } catch (err) {
    const name = ckrName(err);
    if (name !== undefined && okCodes.includes(name)) return undefined;
    throw err;
  }
}

export { pkcs11js };
