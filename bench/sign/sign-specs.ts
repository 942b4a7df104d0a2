/** What the sign-path load processes are asked to do. */

export type KeyKind = 'ecdsa-p256' | 'rsa-2048';

/** The key on the embedded default and the algorithm a TLS 1.3 server would use with it. */
export const SIGN_KEYS: Record<KeyKind, { keyName: string; algorithm: 'ECDSA_SHA256' | 'RSA_PSS_SHA256' }> = {
  'ecdsa-p256': { keyName: 'dev-ec', algorithm: 'ECDSA_SHA256' },
  'rsa-2048': { keyName: 'dev-rsa', algorithm: 'RSA_PSS_SHA256' },
};

/** Load through the gateway, from a separate process. */
export interface GatewayLoadSpec {
  endpoint: string;
  caFile: string;
  certFile: string;
  keyFile: string;
  keyName: string;
  algorithm: 'ECDSA_SHA256' | 'RSA_PSS_SHA256';
  rpc: 'unary' | 'stream';
  concurrency: number;
}

/** In-process pkcs11js against the same token: the baseline. */
export interface InProcessSpec {
  modulePath: string;
  softhsmConf: string;
  tokenLabel: string;
  pinFile: string;
  keyLabel: string;
  algorithm: 'ECDSA_SHA256' | 'RSA_PSS_SHA256';
  /** sync: C_SignInit + C_Sign on the calling thread; async: C_Sign's callback form (libuv threadpool). */
  mode: 'sync' | 'async';
  /** Sessions opened (and, for async, signatures in flight: one per session). */
  sessions: number;
}
