import { KeyType, SignatureAlgorithm } from '../../proto/generated/hsmgateway/v1/signer';

export type HashName = 'sha256' | 'sha384' | 'sha512';

/** What the gateway needs to know about each SignatureAlgorithm, independent of PKCS#11. */
export interface AlgorithmSpec {
  algorithm: SignatureAlgorithm;
  name: string;
  keyType: KeyType;
  /** Undefined for ED25519, which signs the message itself. */
  hash?: HashName;
  /** Digest length in bytes (0 for ED25519). */
  digestLength: number;
  padding?: 'pkcs1' | 'pss';
}

const specs: AlgorithmSpec[] = [
  { algorithm: SignatureAlgorithm.RSA_PKCS1_SHA256, name: 'RSA_PKCS1_SHA256', keyType: KeyType.KEY_TYPE_RSA, hash: 'sha256', digestLength: 32, padding: 'pkcs1' },
  { algorithm: SignatureAlgorithm.RSA_PKCS1_SHA384, name: 'RSA_PKCS1_SHA384', keyType: KeyType.KEY_TYPE_RSA, hash: 'sha384', digestLength: 48, padding: 'pkcs1' },
  { algorithm: SignatureAlgorithm.RSA_PKCS1_SHA512, name: 'RSA_PKCS1_SHA512', keyType: KeyType.KEY_TYPE_RSA, hash: 'sha512', digestLength: 64, padding: 'pkcs1' },
  { algorithm: SignatureAlgorithm.RSA_PSS_SHA256, name: 'RSA_PSS_SHA256', keyType: KeyType.KEY_TYPE_RSA, hash: 'sha256', digestLength: 32, padding: 'pss' },
  { algorithm: SignatureAlgorithm.RSA_PSS_SHA384, name: 'RSA_PSS_SHA384', keyType: KeyType.KEY_TYPE_RSA, hash: 'sha384', digestLength: 48, padding: 'pss' },
  { algorithm: SignatureAlgorithm.RSA_PSS_SHA512, name: 'RSA_PSS_SHA512', keyType: KeyType.KEY_TYPE_RSA, hash: 'sha512', digestLength: 64, padding: 'pss' },
  { algorithm: SignatureAlgorithm.ECDSA_SHA256, name: 'ECDSA_SHA256', keyType: KeyType.KEY_TYPE_EC, hash: 'sha256', digestLength: 32 },
  { algorithm: SignatureAlgorithm.ECDSA_SHA384, name: 'ECDSA_SHA384', keyType: KeyType.KEY_TYPE_EC, hash: 'sha384', digestLength: 48 },
  { algorithm: SignatureAlgorithm.ECDSA_SHA512, name: 'ECDSA_SHA512', keyType: KeyType.KEY_TYPE_EC, hash: 'sha512', digestLength: 64 },
  { algorithm: SignatureAlgorithm.ED25519, name: 'ED25519', keyType: KeyType.KEY_TYPE_ED25519, digestLength: 0 },
];

const byValue = new Map<number, AlgorithmSpec>(specs.map((s) => [s.algorithm, s]));
const byName = new Map<string, AlgorithmSpec>(specs.map((s) => [s.name, s]));

export const ALL_ALGORITHM_NAMES: readonly string[] = specs.map((s) => s.name);

/** The spec of a known, specified algorithm; undefined for UNSPECIFIED and unknown wire values. */
export function algorithmSpec(algorithm: number): AlgorithmSpec | undefined {
  return byValue.get(algorithm);
}

export function algorithmByName(name: string): AlgorithmSpec | undefined {
  return byName.get(name);
}

/** The names of every algorithm usable with a key type, in enum order. */
export function algorithmNamesForKeyType(keyType: KeyType): string[] {
  return specs.filter((s) => s.keyType === keyType).map((s) => s.name);
}

/** Every algorithm usable with a key type, in enum order. */
export function algorithmsForKeyType(keyType: KeyType): SignatureAlgorithm[] {
  return specs.filter((s) => s.keyType === keyType).map((s) => s.algorithm);
}

/** A metric/log-safe label: the enum name, or "invalid" for anything else a client may send. */
export function algorithmLabel(algorithm: number): string {
  return byValue.get(algorithm)?.name ?? 'invalid';
}
