import { createPublicKey, type JsonWebKey } from 'node:crypto';

/** Named curves by the DER of their OID (CKA_EC_PARAMS), with JWK names and field sizes. */
const CURVES: ReadonlyArray<{ paramsHex: string; name: string; jwk: string; fieldBytes: number }> = [
  { paramsHex: '06082a8648ce3d030107', name: 'P-256', jwk: 'P-256', fieldBytes: 32 },
  { paramsHex: '06052b81040022', name: 'P-384', jwk: 'P-384', fieldBytes: 48 },
  { paramsHex: '06052b81040023', name: 'P-521', jwk: 'P-521', fieldBytes: 66 },
];
/** Ed25519 CKA_EC_PARAMS: the OID 1.3.101.112, or the PrintableString "edwards25519" of older modules. */
const ED25519_PARAMS = new Set(['06032b6570', '130c656477617264733235353139']);

export interface CurveInfo { name: string; jwk: string; fieldBytes: number }

export function curveFromParams(params: Buffer): CurveInfo | undefined {
  const hex = params.toString('hex');
  return CURVES.find((c) => c.paramsHex === hex);
}

export function isEd25519Params(params: Buffer): boolean {
  return ED25519_PARAMS.has(params.toString('hex'));
}

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

export function ecSpki(curve: CurveInfo, ecPoint: Buffer): Buffer {
  const point = unwrapEcPoint(ecPoint, 1 + 2 * curve.fieldBytes);
  if (point[0] !== 0x04) throw new Error('compressed EC points are not supported');
  const x = point.subarray(1, 1 + curve.fieldBytes);
  const y = point.subarray(1 + curve.fieldBytes);
  return spkiFromJwk({ kty: 'EC', crv: curve.jwk, x: b64url(x), y: b64url(y) });
}

export function ed25519Spki(ecPoint: Buffer): Buffer {
  return spkiFromJwk({ kty: 'OKP', crv: 'Ed25519', x: b64url(unwrapEcPoint(ecPoint, 32)) });
}
