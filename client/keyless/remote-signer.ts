// The contract between a keyless bridge and the code that talks to the signing service.
import { pathToFileURL } from 'node:url';

/**
 * Signs with remote keys. A bridge has one in its worker thread (the blocking path) and, in
 * non-blocking mode, one on the thread that owns the TLS servers. `algorithm` is a
 * SignatureAlgorithm number of proto/hsmgateway/v1/signer.proto: for RSA_PKCS1_SHA256=1 ...
 * ECDSA_SHA512=9 the bytes are a digest; for ED25519=10 they are the whole message (EdDSA
 * signs the message, and the TLS handshake's signed content is short). ECDSA signatures are
 * DER-encoded, RSA signatures modulus-sized, Ed25519 signatures 64 bytes.
 */
export interface RemoteSigner {
  sign(keyName: string, algorithm: number, digest: Buffer): Promise<Buffer>;
  /**
   * Optional, the same as sign() reporting through a callback, called once and never
   * synchronously. The non-blocking mode prefers it: no promise per handshake.
   */
  signWithCallback?(keyName: string, algorithm: number, digest: Buffer, done: (error: Error | null, signature?: Uint8Array) => void): void;
  close?(): Promise<void> | void;
}

/** What a signer module (KeylessBridgeOptions.signerModule) exports. */
export type CreateRemoteSigner = (options: unknown) => RemoteSigner | Promise<RemoteSigner>;

/** SignatureAlgorithm numbers, as in proto/hsmgateway/v1/signer.proto. */
export { SignatureAlgorithm } from '../../common/algorithms';

export function isRemoteSigner(value: unknown): value is RemoteSigner {
  return typeof value === 'object' && value !== null && typeof (value as { sign?: unknown }).sign === 'function';
}

/** Loads `signerModule` on the calling thread and creates its signer. */
export async function createSigner(signerModule: string, signerOptions: unknown): Promise<RemoteSigner> {
  const loaded: unknown = await import(pathToFileURL(signerModule).href);
  // CommonJS modules imported from here expose their exports (also) as `default`.
  const candidates = [loaded, (loaded as { default?: unknown }).default];
  for (const candidate of candidates) {
    const create = (candidate as { createRemoteSigner?: unknown } | undefined)?.createRemoteSigner;
    if (typeof create === 'function') {
      const signer: unknown = await (create as (options: unknown) => unknown)(signerOptions);
      if (!isRemoteSigner(signer)) throw new Error(`createRemoteSigner() in ${signerModule} did not return an object with sign()`);
      return signer;
    }
  }
  throw new Error(`${signerModule} does not export createRemoteSigner(options)`);
}
