// The contract between a keyless bridge and the code that talks to the signing service.

/**
 * Signs prehashed digests with remote keys. Lives in the bridge's worker thread.
 * `algorithm` is a SignatureAlgorithm number of proto/hsmgateway/v1/signer.proto
 * (RSA_PKCS1_SHA256=1 ... ECDSA_SHA512=9); ECDSA signatures are DER-encoded, RSA
 * signatures are modulus-sized.
 */
export interface RemoteSigner {
  sign(keyName: string, algorithm: number, digest: Buffer): Promise<Buffer>;
  close?(): Promise<void> | void;
}

/** What a signer module (KeylessBridgeOptions.signerModule) exports. */
export type CreateRemoteSigner = (options: unknown) => RemoteSigner | Promise<RemoteSigner>;

/** SignatureAlgorithm numbers, as in proto/hsmgateway/v1/signer.proto. */
export const SignatureAlgorithm = {
  RSA_PKCS1_SHA256: 1,
  RSA_PKCS1_SHA384: 2,
  RSA_PKCS1_SHA512: 3,
  RSA_PSS_SHA256: 4,
  RSA_PSS_SHA384: 5,
  RSA_PSS_SHA512: 6,
  ECDSA_SHA256: 7,
  ECDSA_SHA384: 8,
  ECDSA_SHA512: 9,
} as const;
