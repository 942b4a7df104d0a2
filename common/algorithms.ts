/**
 * The signature vocabulary, each fact once: for every SignatureAlgorithm of signer.proto its key
 * type, hash, digest length, RSA padding and JWS name; for every hash its names and length; for
 * every curve its OID (the DER of CKA_EC_PARAMS), field size and matching hash. The gateway, the
 * client, the CLI and the tests read them here; the native code gets its numbers from a header
 * generated from the same proto (scripts/generate-native-algorithms.js).
 */
import { KeyType, SignatureAlgorithm } from '../proto/generated/hsmgateway/v1/signer';

export { KeyType, SignatureAlgorithm };

/** node:crypto's name of a hash. */
export type HashName = 'sha256' | 'sha384' | 'sha512';
/** WebCrypto's name of the same hash. */
export type WebCryptoHash = 'SHA-256' | 'SHA-384' | 'SHA-512';

export interface HashSpec {
  name: HashName;
  webCrypto: WebCryptoHash;
  /** Digest length in bytes. */
  length: number;
}

export const HASHES: Readonly<Record<HashName, HashSpec>> = {
  sha256: { name: 'sha256', webCrypto: 'SHA-256', length: 32 },
  sha384: { name: 'sha384', webCrypto: 'SHA-384', length: 48 },
  sha512: { name: 'sha512', webCrypto: 'SHA-512', length: 64 },
};

/** The hash of a WebCrypto name (case-insensitive), or undefined. */
export function hashByWebCryptoName(name: string): HashSpec | undefined {
  const upper = name.toUpperCase();
  return Object.values(HASHES).find((h) => h.webCrypto === upper);
}

export type Padding = 'pkcs1' | 'pss';

/** A SignatureAlgorithm's name, as the API and the config spell it. */
export type AlgorithmName = Exclude<keyof typeof SignatureAlgorithm, 'UNRECOGNIZED' | 'SIGNATURE_ALGORITHM_UNSPECIFIED'>;

export interface AlgorithmSpec {
  algorithm: SignatureAlgorithm;
  name: AlgorithmName;
  keyType: KeyType;
  /** Undefined for ED25519, which signs the message itself. */
  hash?: HashName;
  /** Digest length in bytes (0 for ED25519). */
  digestLength: number;
  padding?: Padding;
  /** The JWS `alg` (RFC 7518, RFC 8037). */
  jws: string;
}

function rsa(algorithm: SignatureAlgorithm, name: AlgorithmName, hash: HashName, padding: Padding, jws: string): AlgorithmSpec {
  return { algorithm, name, keyType: KeyType.KEY_TYPE_RSA, hash, digestLength: HASHES[hash].length, padding, jws };
}

function ecdsa(algorithm: SignatureAlgorithm, name: AlgorithmName, hash: HashName, jws: string): AlgorithmSpec {
  return { algorithm, name, keyType: KeyType.KEY_TYPE_EC, hash, digestLength: HASHES[hash].length, jws };
}

const SPECS: readonly AlgorithmSpec[] = [
  rsa(SignatureAlgorithm.RSA_PKCS1_SHA256, 'RSA_PKCS1_SHA256', 'sha256', 'pkcs1', 'RS256'),
  rsa(SignatureAlgorithm.RSA_PKCS1_SHA384, 'RSA_PKCS1_SHA384', 'sha384', 'pkcs1', 'RS384'),
  rsa(SignatureAlgorithm.RSA_PKCS1_SHA512, 'RSA_PKCS1_SHA512', 'sha512', 'pkcs1', 'RS512'),
  rsa(SignatureAlgorithm.RSA_PSS_SHA256, 'RSA_PSS_SHA256', 'sha256', 'pss', 'PS256'),
  rsa(SignatureAlgorithm.RSA_PSS_SHA384, 'RSA_PSS_SHA384', 'sha384', 'pss', 'PS384'),
  rsa(SignatureAlgorithm.RSA_PSS_SHA512, 'RSA_PSS_SHA512', 'sha512', 'pss', 'PS512'),
  ecdsa(SignatureAlgorithm.ECDSA_SHA256, 'ECDSA_SHA256', 'sha256', 'ES256'),
  ecdsa(SignatureAlgorithm.ECDSA_SHA384, 'ECDSA_SHA384', 'sha384', 'ES384'),
  ecdsa(SignatureAlgorithm.ECDSA_SHA512, 'ECDSA_SHA512', 'sha512', 'ES512'),
  { algorithm: SignatureAlgorithm.ED25519, name: 'ED25519', keyType: KeyType.KEY_TYPE_ED25519, digestLength: 0, jws: 'EdDSA' },
];

const byValue = new Map<number, AlgorithmSpec>(SPECS.map((s) => [s.algorithm, s]));
const byName = new Map<string, AlgorithmSpec>(SPECS.map((s) => [s.name, s]));

export const ALL_ALGORITHM_NAMES: readonly AlgorithmName[] = SPECS.map((s) => s.name);

/** The spec of a known, specified algorithm; undefined for UNSPECIFIED and unknown wire values. */
export function algorithmSpec(algorithm: number): AlgorithmSpec | undefined {
  return byValue.get(algorithm);
}

export function algorithmByName(name: string): AlgorithmSpec | undefined {
  return byName.get(name);
}

/** The algorithm that signs with a key type, a hash and (RSA) a padding; undefined if none does. */
export function algorithmFor(keyType: KeyType, hash?: HashName, padding?: Padding): AlgorithmSpec | undefined {
  return SPECS.find((s) => s.keyType === keyType && s.hash === hash && (keyType !== KeyType.KEY_TYPE_RSA || s.padding === padding));
}

/** The names of every algorithm usable with a key type, in enum order. */
export function algorithmNamesForKeyType(keyType: KeyType): AlgorithmName[] {
  return SPECS.filter((s) => s.keyType === keyType).map((s) => s.name);
}

/** Every algorithm usable with a key type, in enum order. */
export function algorithmsForKeyType(keyType: KeyType): SignatureAlgorithm[] {
  return SPECS.filter((s) => s.keyType === keyType).map((s) => s.algorithm);
}

/** A metric/log-safe label: the enum name, or "invalid" for anything else a client may send. */
export function algorithmLabel(algorithm: number): string {
  return byValue.get(algorithm)?.name ?? 'invalid';
}

export type CurveName = 'P-256' | 'P-384' | 'P-521';

export interface CurveSpec {
  /** Also its JWK `crv` and WebCrypto `namedCurve`. */
  name: CurveName;
  /** The DER of its OID, as CKA_EC_PARAMS holds it (hex). */
  paramsHex: string;
  /** Bytes of one coordinate (and of r and s in a raw ECDSA signature). */
  fieldBytes: number;
  /** The hash that matches its strength (the default for keys on it). */
  hash: HashName;
}

export const CURVES: readonly CurveSpec[] = [
  { name: 'P-256', paramsHex: '06082a8648ce3d030107', fieldBytes: 32, hash: 'sha256' },
  { name: 'P-384', paramsHex: '06052b81040022', fieldBytes: 48, hash: 'sha384' },
  { name: 'P-521', paramsHex: '06052b81040023', fieldBytes: 66, hash: 'sha512' },
];

export function curveByName(name: string): CurveSpec | undefined {
  return CURVES.find((c) => c.name === name);
}

export function curveFromParams(params: Buffer): CurveSpec | undefined {
  const hex = params.toString('hex');
  return CURVES.find((c) => c.paramsHex === hex);
}

/** Ed25519's CKA_EC_PARAMS as we write it: the RFC 8410 OID id-Ed25519 (1.3.101.112), DER. */
export const ED25519_PARAMS_HEX = '06032b6570';
/** What modules may hold instead: older ones the PrintableString "edwards25519". */
const ED25519_PARAMS_READ = new Set([ED25519_PARAMS_HEX, '130c656477617264733235353139']);

export function isEd25519Params(params: Buffer): boolean {
  return ED25519_PARAMS_READ.has(params.toString('hex'));
}

/** A KeyType as the client shows it (KeyDescription.type). */
export type KeyTypeName = 'RSA' | 'EC' | 'ED25519' | 'UNSPECIFIED';

const KEY_TYPE_NAMES: ReadonlyArray<[KeyType, KeyTypeName]> = [
  [KeyType.KEY_TYPE_RSA, 'RSA'], [KeyType.KEY_TYPE_EC, 'EC'], [KeyType.KEY_TYPE_ED25519, 'ED25519'], [KeyType.KEY_TYPE_UNSPECIFIED, 'UNSPECIFIED'],
];

export function keyTypeName(keyType: KeyType): KeyTypeName {
  return KEY_TYPE_NAMES.find(([type]) => type === keyType)?.[1] ?? 'UNSPECIFIED';
}

export function keyTypeByName(name: KeyTypeName): KeyType {
  return KEY_TYPE_NAMES.find(([, n]) => n === name)?.[0] ?? KeyType.KEY_TYPE_UNSPECIFIED;
}

/** What kind of key signs, as the client and the token tools need to know it. */
export type KeyKind = { kind: 'ec'; curve: CurveName } | { kind: 'rsa' } | { kind: 'ed25519' };

/** The kind of a key of `keyType` (and, for EC, `curve`); throws naming the key when unsupported. */
export function keyKindOf(keyName: string, keyType: KeyType, curve?: string): KeyKind {
  if (keyType === KeyType.KEY_TYPE_EC) {
    const spec = curve === undefined ? undefined : curveByName(curve);
    if (!spec) throw new Error(`key "${keyName}": unsupported curve "${curve ?? ''}"`);
    return { kind: 'ec', curve: spec.name };
  }
  if (keyType === KeyType.KEY_TYPE_RSA) return { kind: 'rsa' };
  if (keyType === KeyType.KEY_TYPE_ED25519) return { kind: 'ed25519' };
  throw new Error(`key "${keyName}": unknown key type`);
}
