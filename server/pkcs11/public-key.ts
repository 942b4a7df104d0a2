import { createPublicKey, type JsonWebKey } from 'node:crypto';
import type { CurveSpec } from '../../common/algorithms';

/** CKA_EC_POINT is a DER OCTET STRING around the point; some modules return the bare point. */
export function unwrapEcPoint(ecPoint: Buffer, expectedLength: number): Buffer {
  if (ecPoint.length === expectedLength) return ecPoint;
  if (ecPoint[0] === 0x04) {
    const lenByte = ecPoint[1];
    const headerLength = lenByte < 0x80 ? 2 : 2 + (lenByte & 0x7f);
    const inner = ecPoint.subarray(headerLength);
    if (inner.length === expectedLength) return inner;
  }
  throw new Error(`unexpected CKA_EC_POINT encoding (${ecPoint.length} bytes)`);
}

const b64url = (b: Buffer): string => b.toString('base64url');

function spkiFromJwk(jwk: JsonWebKey): Buffer {
  return createPublicKey({ key: jwk, format: 'jwk' }).export({ type: 'spki', format: 'der' });
}

export function rsaSpki(modulus: Buffer, exponent: Buffer): Buffer {
  return spkiFromJwk({ kty: 'RSA', n: b64url(modulus), e: b64url(exponent) });
}

export function ecSpki(curve: CurveSpec, ecPoint: Buffer): Buffer {
  const point = unwrapEcPoint(ecPoint, 1 + 2 * curve.fieldBytes);
  if (point[0] !== 0x04) throw new Error('compressed EC points are not supported');
  const x = point.subarray(1, 1 + curve.fieldBytes);
  const y = point.subarray(1 + curve.fieldBytes);
  return spkiFromJwk({ kty: 'EC', crv: curve.name, x: b64url(x), y: b64url(y) });
}

export function ed25519Spki(ecPoint: Buffer): Buffer {
  return spkiFromJwk({ kty: 'OKP', crv: 'Ed25519', x: b64url(unwrapEcPoint(ecPoint, 32)) });
}
