import { webcrypto } from 'node:crypto';
import {
  algorithmFor, curveByName, hashByWebCryptoName, HASHES, KeyType, SignatureAlgorithm, type CurveSpec, type HashSpec, type KeyKind, type Padding, type WebCryptoHash,
} from '../algorithms';

/** Signs a whole message with a remote key; ECDSA answers are DER, as the gateway returns them. */
export type MessageSigner = (algorithm: SignatureAlgorithm, message: Buffer) => Promise<Buffer>;

export type RemoteKeyKind = KeyKind;

type HashName = WebCryptoHash;

/**
 * A CryptoKey-shaped handle for a key that lives in the HSM. It holds no secret: WebCrypto code
 * (such as @peculiar/x509) passes it back to RemoteCrypto.subtle.sign, which calls the signer.
 */
export interface RemoteCryptoKey {
  readonly type: 'private';
  readonly extractable: false;
  readonly usages: ['sign'];
  readonly algorithm: { name: string; namedCurve?: string; hash?: { name: HashName } };
  readonly remote: { kind: RemoteKeyKind; signer: MessageSigner; pss: boolean };
}

export function remoteCryptoKey(kind: RemoteKeyKind, signer: MessageSigner, options: { hash?: HashName; rsaPss?: boolean } = {}): RemoteCryptoKey {
  const hash = { name: options.hash ?? 'SHA-256' };
  let algorithm: RemoteCryptoKey['algorithm'];
  // An EC key carries a hash only when asked: it becomes the default for sign calls without one.
  if (kind.kind === 'ec') algorithm = options.hash ? { name: 'ECDSA', namedCurve: kind.curve, hash } : { name: 'ECDSA', namedCurve: kind.curve };
  else if (kind.kind === 'ed25519') algorithm = { name: 'Ed25519' };
  else algorithm = { name: options.rsaPss ? 'RSA-PSS' : 'RSASSA-PKCS1-v1_5', hash };
  return { type: 'private', extractable: false, usages: ['sign'], algorithm, remote: { kind, signer, pss: options.rsaPss ?? false } };
}

function hashOf(algorithm: unknown, key: RemoteCryptoKey): HashSpec {
  const a = algorithm as { hash?: string | { name?: string } };
  const h = typeof a?.hash === 'string' ? a.hash : a?.hash?.name ?? key.algorithm.hash?.name ?? HASHES.sha256.webCrypto;
  const hash = hashByWebCryptoName(h);
  if (!hash) throw new Error(`unsupported hash ${h}`);
  return hash;
}

function algorithmOf(keyType: KeyType, hash: HashSpec, padding?: Padding): SignatureAlgorithm {
  const spec = algorithmFor(keyType, hash.name, padding);
  if (!spec) throw new Error(`no signature algorithm for ${hash.webCrypto}${padding ? ` with ${padding}` : ''}`);
  return spec.algorithm;
}

/** The wire algorithm for a WebCrypto sign call on a remote key. */
export function wireAlgorithm(algorithm: unknown, key: RemoteCryptoKey): SignatureAlgorithm {
  const kind = key.remote.kind;
  if (kind.kind === 'ed25519') return SignatureAlgorithm.ED25519;
  const hash = hashOf(algorithm, key);
  if (kind.kind === 'ec') return algorithmOf(KeyType.KEY_TYPE_EC, hash);
  const name = (algorithm as { name?: string })?.name ?? key.algorithm.name;
  if (name === 'RSA-PSS') {
    const saltLength = (algorithm as { saltLength?: number }).saltLength;
    if (saltLength !== undefined && saltLength !== hash.length) throw new Error(`RSA-PSS salt length must equal the hash length (${hash.length})`);
    return algorithmOf(KeyType.KEY_TYPE_RSA, hash, 'pss');
  }
  return algorithmOf(KeyType.KEY_TYPE_RSA, hash, 'pkcs1');
}

/** DER Ecdsa-Sig-Value to the fixed-width r||s WebCrypto returns. */
export function ecdsaDerToRaw(der: Buffer, fieldBytes: number): Buffer {
  let i = 2;
  if (der[1] & 0x80) i = 2 + (der[1] & 0x7f);
  const out = Buffer.alloc(2 * fieldBytes);
  for (let n = 0; n < 2; n++) {
    if (der[i] !== 0x02) throw new Error('malformed ECDSA signature');
    const len = der[i + 1];
    let v = der.subarray(i + 2, i + 2 + len);
    while (v.length > fieldBytes && v[0] === 0) v = v.subarray(1);
    v.copy(out, (n + 1) * fieldBytes - v.length);
    i += 2 + len;
  }
  return out;
}

export function isRemoteCryptoKey(key: unknown): key is RemoteCryptoKey {
  return typeof key === 'object' && key !== null && 'remote' in key;
}

/** Signs `data` with a remote key as WebCrypto would (ECDSA as raw r||s). */
export async function remoteSign(algorithm: unknown, key: RemoteCryptoKey, data: Buffer): Promise<ArrayBuffer> {
  const sig = await key.remote.signer(wireAlgorithm(algorithm, key), data);
  const out = key.remote.kind.kind === 'ec' ? ecdsaDerToRaw(sig, (curveByName(key.remote.kind.curve) as CurveSpec).fieldBytes) : sig;
  return out.buffer.slice(out.byteOffset, out.byteOffset + out.byteLength) as ArrayBuffer;
}

function toBuffer(data: ArrayBuffer | ArrayBufferView): Buffer {
  return ArrayBuffer.isView(data) ? Buffer.from(data.buffer, data.byteOffset, data.byteLength) : Buffer.from(data);
}

/**
 * A WebCrypto `Crypto` whose `subtle.sign` sends remote keys to their signer and everything else
 * to Node's WebCrypto. Hand it to libraries that accept a crypto provider (e.g. @peculiar/x509).
 */
export function createRemoteCrypto(): webcrypto.Crypto {
  const subtle = webcrypto.subtle;
  const remoteSubtle = new Proxy(subtle, {
    get(target, prop, receiver) {
      if (prop === 'sign') {
        return (algorithm: unknown, key: unknown, data: ArrayBuffer | ArrayBufferView): Promise<ArrayBuffer> => {
          if (isRemoteCryptoKey(key)) return remoteSign(algorithm, key, toBuffer(data));
          return target.sign(algorithm as webcrypto.AlgorithmIdentifier, key as webcrypto.CryptoKey, data);
        };
      }
      const value = Reflect.get(target, prop, receiver) as unknown;
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
  return {
    subtle: remoteSubtle,
    getRandomValues: webcrypto.getRandomValues.bind(webcrypto),
    randomUUID: webcrypto.randomUUID.bind(webcrypto),
  } as webcrypto.Crypto;
}
