// The PEM that names a remote key. It holds no secret: a bridge id, a key name and
// the public key. Layout (native/src/keymgmt.cc reads the same):
//   "HSMGWKL1" | u16be len | bridge id | u16be len | key name | SubjectPublicKeyInfo DER
import { createPublicKey } from 'node:crypto';

export const KEYLESS_PEM_LABEL = 'HSM GATEWAY KEYLESS KEY';
const MAGIC = Buffer.from('HSMGWKL1', 'latin1');
const MAX_FIELD_BYTES = 1024;

function field(name: string, value: string): Buffer {
  const bytes = Buffer.from(value, 'utf8');
  if (bytes.length === 0 || bytes.length > MAX_FIELD_BYTES) {
    throw new RangeError(`keyless: ${name} must be 1..${MAX_FIELD_BYTES} bytes of UTF-8`);
  }
  const length = Buffer.alloc(2);
  length.writeUInt16BE(bytes.length);
  return Buffer.concat([length, bytes]);
}

/** Validates `spkiDer` (an EC, RSA or Ed25519 SubjectPublicKeyInfo) and returns it in canonical DER. */
export function canonicalSpki(spkiDer: Buffer): Buffer {
  if (!Buffer.isBuffer(spkiDer)) throw new TypeError('keyless: spkiDer must be a Buffer');
  let type: string | undefined;
  let der: Buffer;
  try {
    const key = createPublicKey({ key: spkiDer, format: 'der', type: 'spki' });
    type = key.asymmetricKeyType;
    der = key.export({ type: 'spki', format: 'der' });
  } catch (error) {
    throw new TypeError(`keyless: spkiDer is not a DER SubjectPublicKeyInfo (${error instanceof Error ? error.message : String(error)})`);
  }
  if (type !== 'ec' && type !== 'rsa' && type !== 'ed25519') {
    throw new TypeError(`keyless: spkiDer must hold an EC, RSA or Ed25519 public key, not ${type ?? 'unknown'}`);
  }
  return der;
}

export function encodeKeylessKeyPem(bridgeId: string, keyName: string, spkiDer: Buffer): string {
  if (typeof keyName !== 'string') throw new TypeError('keyless: keyName must be a string');
  const body = Buffer.concat([MAGIC, field('bridge id', bridgeId), field('keyName', keyName), canonicalSpki(spkiDer)]);
  const lines = body.toString('base64').match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${KEYLESS_PEM_LABEL}-----\n${lines.join('\n')}\n-----END ${KEYLESS_PEM_LABEL}-----\n`;
}
