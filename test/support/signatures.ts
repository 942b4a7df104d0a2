import { createHash, createPublicKey, verify, constants } from 'node:crypto';
import { SignatureAlgorithm } from '../../proto/generated/hsmgateway/v1/signer';

const HASH: Record<number, 'sha256' | 'sha384' | 'sha512'> = {
  [SignatureAlgorithm.RSA_PKCS1_SHA256]: 'sha256', [SignatureAlgorithm.RSA_PKCS1_SHA384]: 'sha384', [SignatureAlgorithm.RSA_PKCS1_SHA512]: 'sha512',
  [SignatureAlgorithm.RSA_PSS_SHA256]: 'sha256', [SignatureAlgorithm.RSA_PSS_SHA384]: 'sha384', [SignatureAlgorithm.RSA_PSS_SHA512]: 'sha512',
  [SignatureAlgorithm.ECDSA_SHA256]: 'sha256', [SignatureAlgorithm.ECDSA_SHA384]: 'sha384', [SignatureAlgorithm.ECDSA_SHA512]: 'sha512',
};

export function hashFor(algorithm: SignatureAlgorithm): 'sha256' | 'sha384' | 'sha512' {
  return HASH[algorithm];
}

export function digestFor(algorithm: SignatureAlgorithm, message: Buffer): Buffer {
  return createHash(HASH[algorithm]).update(message).digest();
}

const isPss = (a: SignatureAlgorithm): boolean => a >= SignatureAlgorithm.RSA_PSS_SHA256 && a <= SignatureAlgorithm.RSA_PSS_SHA512;

/** Verifies a gateway signature over `message` with node:crypto and the SPKI from GetKey. */
export function verifySignature(spki: Buffer, algorithm: SignatureAlgorithm, message: Buffer, signature: Buffer): boolean {
  const key = createPublicKey({ key: spki, format: 'der', type: 'spki' });
  const hash = HASH[algorithm];
  if (isPss(algorithm)) {
    // Salt length equal to the hash length, as the API promises: PSS_SALTLEN_DIGEST checks it.
    return verify(hash, message, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST }, signature);
  }
  if (algorithm <= SignatureAlgorithm.RSA_PKCS1_SHA512) return verify(hash, message, { key, padding: constants.RSA_PKCS1_PADDING }, signature);
  // ECDSA: DER-encoded signatures (node's default dsaEncoding is 'der').
  return verify(hash, message, { key, dsaEncoding: 'der' }, signature);
}
