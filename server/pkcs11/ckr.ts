import * as pkcs11js from 'pkcs11js';

/** CKR_* names by value, from pkcs11js's constants. */
const CKR_NAMES = new Map<number, string>(
  Object.entries(pkcs11js).filter(([name, value]) => name.startsWith('CKR_') && typeof value === 'number').map(([name, value]) => [value as number, name]),
);

/** A PKCS#11 failure typed where it happened: its CKR name travels as a field, never in a message to parse. */
export class Pkcs11CallError extends Error {
  constructor(readonly ckr: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'Pkcs11CallError';
  }
}

/** The CKR name of a PKCS#11 failure ('CKR_DEVICE_ERROR'), or undefined for any other error. */
export function ckrName(err: unknown): string | undefined {
  if (err instanceof Pkcs11CallError) return err.ckr;
  // Vendor-defined or future codes have no name in pkcs11js: keep the number.
  if (err instanceof pkcs11js.Pkcs11Error) return CKR_NAMES.get(err.code) ?? `CKR_0x${err.code.toString(16).padStart(8, '0')}`;
  return undefined;
}

/** The token refused the PIN itself: trying it again could lock the token. */
const PIN_REJECTED = new Set(['CKR_PIN_INCORRECT', 'CKR_PIN_LOCKED', 'CKR_PIN_INVALID', 'CKR_PIN_LEN_RANGE', 'CKR_PIN_EXPIRED']);

export function isPinRejected(ckr: string | undefined): boolean {
  return ckr !== undefined && PIN_REJECTED.has(ckr);
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
