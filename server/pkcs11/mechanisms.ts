import * as pkcs11js from 'pkcs11js';
import { SignatureAlgorithm } from '../../proto/generated/hsmgateway/v1/signer';
import { algorithmSpec, HASHES, type HashName } from '../../common/algorithms';

/** Not exported by pkcs11js 2.1.7 (PKCS#11 v3.0 values). */
export const CKM_EDDSA = 0x1057;
export const CKM_EC_EDWARDS_KEY_PAIR_GEN = 0x1055;
export const CKK_EC_EDWARDS = 0x40;

/** ASN.1 DigestInfo prefixes (RFC 8017 section 9.2, note 1) that CKM_RSA_PKCS expects before the digest. */
const DIGEST_INFO_PREFIX: Record<HashName, Buffer> = {
  sha256: Buffer.from('3031300d060960864801650304020105000420', 'hex'),
  sha384: Buffer.from('3041300d060960864801650304020205000430', 'hex'),
  sha512: Buffer.from('3051300d060960864801650304020305000440', 'hex'),
};

const HASH_MECHANISM: Record<HashName, number> = { sha256: pkcs11js.CKM_SHA256, sha384: pkcs11js.CKM_SHA384, sha512: pkcs11js.CKM_SHA512 };
const MGF1: Record<HashName, number> = { sha256: pkcs11js.CKG_MGF1_SHA256, sha384: pkcs11js.CKG_MGF1_SHA384, sha512: pkcs11js.CKG_MGF1_SHA512 };

/** How one SignatureAlgorithm is carried out with PKCS#11. */
export interface MechanismPlan {
  mechanism: pkcs11js.Mechanism;
  /** Turns the request's digest (or message, for EdDSA) into the mechanism's input. */
  input(data: Buffer): Buffer;
  /** Turns the token's output into the wire signature. */
  output(raw: Buffer): Buffer;
}

const identity = (b: Buffer): Buffer => b;

function plan(algorithm: SignatureAlgorithm): MechanismPlan {
  const spec = algorithmSpec(algorithm);
  if (!spec) throw new Error(`no mechanism for algorithm ${algorithm}`);
  if (algorithm === SignatureAlgorithm.ED25519) return { mechanism: { mechanism: CKM_EDDSA }, input: identity, output: identity };
  const hash = spec.hash as HashName;
  if (spec.padding === 'pkcs1') {
    const prefix = DIGEST_INFO_PREFIX[hash];
    return { mechanism: { mechanism: pkcs11js.CKM_RSA_PKCS }, input: (d) => Buffer.concat([prefix, d]), output: identity };
  }
  if (spec.padding === 'pss') {
    const parameter: pkcs11js.RsaPSS = { type: pkcs11js.CK_PARAMS_RSA_PSS, hashAlg: HASH_MECHANISM[hash], mgf: MGF1[hash], saltLen: HASHES[hash].length };
    return { mechanism: { mechanism: pkcs11js.CKM_RSA_PKCS_PSS, parameter }, input: identity, output: identity };
  }
  // CKM_ECDSA signs the digest as given (the token truncates it to the order's length, as
  // X9.62 does) and returns raw r||s; TLS and X.509 need the DER Ecdsa-Sig-Value.
  return { mechanism: { mechanism: pkcs11js.CKM_ECDSA }, input: identity, output: ecdsaRawToDer };
}

const plans = new Map<number, MechanismPlan>();

/** The cached PKCS#11 plan for an algorithm the caller has already validated. */
export function mechanismPlan(algorithm: SignatureAlgorithm): MechanismPlan {
  let p = plans.get(algorithm);
  if (!p) {
    p = plan(algorithm);
    plans.set(algorithm, p);
  }
  return p;
}

function derInteger(bytes: Buffer): Buffer {
  let start = 0;
  while (start < bytes.length - 1 && bytes[start] === 0) start++;
  const body = bytes.subarray(start);
  const pad = body[0] & 0x80 ? 1 : 0;
  const out = Buffer.alloc(2 + pad + body.length);
  out[0] = 0x02;
  out[1] = pad + body.length;
  body.copy(out, 2 + pad);
  return out;
}

/** Raw r||s (PKCS#11 CKM_ECDSA output) to DER SEQUENCE { INTEGER r, INTEGER s }. */
export function ecdsaRawToDer(raw: Buffer): Buffer {
  if (raw.length === 0 || raw.length % 2 !== 0) throw new Error(`ECDSA signature of odd length ${raw.length}`);
  const half = raw.length / 2;
  const r = derInteger(raw.subarray(0, half));
  const s = derInteger(raw.subarray(half));
  const bodyLength = r.length + s.length;
  // P-521 signatures exceed 127 bytes and need the long length form.
  const header = bodyLength < 0x80 ? Buffer.from([0x30, bodyLength]) : Buffer.from([0x30, 0x81, bodyLength]);
  return Buffer.concat([header, r, s]);
}
