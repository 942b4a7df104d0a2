import { createHash, createPublicKey, type KeyObject, type webcrypto } from 'node:crypto';
import { status } from '@grpc/grpc-js';
import type { AlgorithmName, GatewayClient, KeyDescription } from './gateway-client';
import { GatewayClientError } from './gateway-client-error';
import { createRemoteCrypto, ecdsaDerToRaw, remoteCryptoKey, WireAlgorithm, type RemoteCryptoKey, type RemoteKeyKind } from './x509/remote-crypto';
import type { SubjectAltNames } from './x509/certificates';

export type HashName = 'SHA-256' | 'SHA-384' | 'SHA-512';

export interface GatewaySignerOptions {
  /**
   * Hash for sign() and the X.509/JWS helpers. Default: SHA-256 for RSA and P-256, SHA-384 for
   * P-384, SHA-512 for P-521. Ignored for Ed25519.
   */
  hash?: HashName;
  /** RSA padding: 'pkcs1' (RSASSA-PKCS1-v1_5, the default: JWS RS256, what CAs expect) or 'pss'. */
  rsaPadding?: 'pkcs1' | 'pss';
}

export interface SignOptions {
  /** ECDSA signature encoding: 'der' (default, as node:crypto) or 'ieee-p1363' (r‖s, as WebCrypto and JWS). */
  dsaEncoding?: 'der' | 'ieee-p1363';
}

const HASH_INDEX: Record<HashName, number> = { 'SHA-256': 0, 'SHA-384': 1, 'SHA-512': 2 };
const NODE_HASH = ['sha256', 'sha384', 'sha512'] as const;
const CURVE_HASH: Record<string, HashName> = { 'P-256': 'SHA-256', 'P-384': 'SHA-384', 'P-521': 'SHA-512' };
const FIELD_BYTES: Record<string, number> = { 'P-256': 32, 'P-384': 48, 'P-521': 66 };
const WIRE_NAMES: Record<number, AlgorithmName> = {
  [WireAlgorithm.RSA_PKCS1_SHA256]: 'RSA_PKCS1_SHA256', [WireAlgorithm.RSA_PKCS1_SHA384]: 'RSA_PKCS1_SHA384', [WireAlgorithm.RSA_PKCS1_SHA512]: 'RSA_PKCS1_SHA512',
  [WireAlgorithm.RSA_PSS_SHA256]: 'RSA_PSS_SHA256', [WireAlgorithm.RSA_PSS_SHA384]: 'RSA_PSS_SHA384', [WireAlgorithm.RSA_PSS_SHA512]: 'RSA_PSS_SHA512',
  [WireAlgorithm.ECDSA_SHA256]: 'ECDSA_SHA256', [WireAlgorithm.ECDSA_SHA384]: 'ECDSA_SHA384', [WireAlgorithm.ECDSA_SHA512]: 'ECDSA_SHA512',
  [WireAlgorithm.ED25519]: 'ED25519',
};
const JWS_NAMES: Record<number, string> = {
  [WireAlgorithm.RSA_PKCS1_SHA256]: 'RS256', [WireAlgorithm.RSA_PKCS1_SHA384]: 'RS384', [WireAlgorithm.RSA_PKCS1_SHA512]: 'RS512',
  [WireAlgorithm.RSA_PSS_SHA256]: 'PS256', [WireAlgorithm.RSA_PSS_SHA384]: 'PS384', [WireAlgorithm.RSA_PSS_SHA512]: 'PS512',
  [WireAlgorithm.ECDSA_SHA256]: 'ES256', [WireAlgorithm.ECDSA_SHA384]: 'ES384', [WireAlgorithm.ECDSA_SHA512]: 'ES512',
  [WireAlgorithm.ED25519]: 'EdDSA',
};

/** The hash a wire algorithm signs with (node:crypto name), or undefined for Ed25519 (whole message). */
function nodeHashOf(algorithm: WireAlgorithm): (typeof NODE_HASH)[number] | undefined {
  return algorithm === WireAlgorithm.ED25519 ? undefined : NODE_HASH[(algorithm - 1) % 3];
}

function keyKindOf(key: KeyDescription): RemoteKeyKind {
  if (key.type === 'EC') {
    if (!(key.curve in FIELD_BYTES)) throw new Error(`key "${key.name}": unsupported curve "${key.curve}"`);
    return { kind: 'ec', curve: key.curve as 'P-256' | 'P-384' | 'P-521' };
  }
  if (key.type === 'RSA') return { kind: 'rsa' };
  if (key.type === 'ED25519') return { kind: 'ed25519' };
  throw new Error(`key "${key.name}": unknown key type`);
}

type CertificatesModule = typeof import('./x509/certificates');
let certificatesModule: CertificatesModule | undefined;

/** Loaded on first use: @peculiar/x509 and reflect-metadata add ~80 ms to a client's start-up. */
function certificates(): CertificatesModule {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  certificatesModule ??= require('./x509/certificates') as CertificatesModule;
  return certificatesModule;
}

const b64url = (data: Buffer | string): string => Buffer.from(data).toString('base64url');

/**
 * Signs with one HSM key through the gateway, for applications: a `sign(data)` call, a compact
 * JWS/JWT helper, a WebCrypto-shaped `cryptoKey` with a `crypto` whose `subtle.sign` accepts it,
 * and X.509 helpers (PKCS#10 request, self-signed certificate). Data is hashed in this process and
 * only the digest goes over the wire, so there is no size limit. Nothing secret is held here.
 *
 * ```ts
 * const signer = await GatewaySigner.create(client, 'api-jwt');
 * const token = await signer.signJwt({ sub: 'svc', exp: Math.floor(Date.now() / 1000) + 300 });
 * ```
 */
export class GatewaySigner {
  /** The wire algorithm sign() uses, e.g. 'ECDSA_SHA256'. */
  readonly algorithm: AlgorithmName;
  /** The JWS "alg" of that algorithm: ES256, ES384, ES512, RS256..., PS256..., EdDSA. */
  readonly jwsAlgorithm: string;
  /** The public key (verify signatures with node:crypto). */
  readonly publicKey: KeyObject;
  /**
   * A CryptoKey-shaped handle (type 'private', not extractable, usages ['sign']). Pass it to
   * `signer.crypto.subtle.sign(...)` or to libraries that accept a WebCrypto provider
   * (@peculiar/x509, pkijs...) together with `signer.crypto`. Node's own `webcrypto.subtle`
   * does not accept it.
   */
  readonly cryptoKey: RemoteCryptoKey;
  private readonly wire: WireAlgorithm;
  private cachedCrypto: webcrypto.Crypto | undefined;

  private constructor(private readonly client: GatewayClient, readonly key: KeyDescription, options: GatewaySignerOptions) {
    const kind = keyKindOf(key);
    const hash: HashName = options.hash ?? (kind.kind === 'ec' ? CURVE_HASH[kind.curve] : 'SHA-256');
    if (!(hash in HASH_INDEX)) throw new TypeError(`GatewaySigner option hash must be SHA-256, SHA-384 or SHA-512 (got ${String(hash)})`);
    const pss = options.rsaPadding === 'pss';
    if (options.rsaPadding !== undefined && options.rsaPadding !== 'pss' && options.rsaPadding !== 'pkcs1') throw new TypeError(`GatewaySigner option rsaPadding must be 'pkcs1' or 'pss' (got ${String(options.rsaPadding)})`);
    if (kind.kind === 'ed25519') this.wire = WireAlgorithm.ED25519;
    else if (kind.kind === 'ec') this.wire = WireAlgorithm.ECDSA_SHA256 + HASH_INDEX[hash];
    else this.wire = (pss ? WireAlgorithm.RSA_PSS_SHA256 : WireAlgorithm.RSA_PKCS1_SHA256) + HASH_INDEX[hash];
    this.algorithm = WIRE_NAMES[this.wire];
    this.jwsAlgorithm = JWS_NAMES[this.wire];
    if (!key.algorithms.includes(this.algorithm)) {
      // The gateway would answer PERMISSION_DENIED (or INVALID_ARGUMENT); say so before any signature is asked for.
      throw new GatewayClientError(status.PERMISSION_DENIED, `key "${key.name}": this client may not use ${this.algorithm} (allowed: ${key.algorithms.join(', ') || 'none'})`);
    }
    this.publicKey = createPublicKey({ key: key.publicKey, format: 'der', type: 'spki' });
    this.cryptoKey = remoteCryptoKey(kind, (algorithm, message) => this.signWire(algorithm, message), {
      hash: kind.kind === 'ed25519' ? undefined : hash, rsaPss: pss,
    });
  }

  /** Fetches the key's metadata (fresh, not cached) and checks this client may use the algorithm. */
  static async create(client: GatewayClient, keyName: string, options: GatewaySignerOptions = {}): Promise<GatewaySigner> {
    return new GatewaySigner(client, await client.getKey(keyName, { refresh: true }), options);
  }

  get keyName(): string {
    return this.key.name;
  }

  /** SubjectPublicKeyInfo, DER. */
  get spki(): Buffer {
    return this.key.publicKey;
  }

  /** The certificate chain stored with the key when this signer was created (DER, leaf first). */
  get certificateChain(): Buffer[] {
    return this.key.certificateChain;
  }

  /** A WebCrypto `Crypto` whose `subtle.sign` sends `cryptoKey` to the gateway (everything else to node). */
  get crypto(): webcrypto.Crypto {
    this.cachedCrypto ??= createRemoteCrypto();
    return this.cachedCrypto;
  }

  /**
   * Signs `data` with `algorithm`: verifiable with `crypto.verify(hash, data, publicKey, signature)`
   * (for PSS: padding RSA_PKCS1_PSS_PADDING, salt length = hash length).
   */
  async sign(data: Buffer | Uint8Array | string, options: SignOptions = {}): Promise<Buffer> {
    const signature = await this.signWire(this.wire, Buffer.from(data as Uint8Array));
    if (options.dsaEncoding === 'ieee-p1363' && this.key.type === 'EC') return ecdsaDerToRaw(signature, FIELD_BYTES[this.key.curve]);
    return signature;
  }

  /** A compact JWS (RFC 7515) over `payload` with this key; `header` is merged over { alg, typ: 'JWT' }. */
  async signJwt(payload: Record<string, unknown>, header: Record<string, unknown> = {}): Promise<string> {
    const protectedHeader = b64url(JSON.stringify({ alg: this.jwsAlgorithm, typ: 'JWT', ...header }));
    const signingInput = `${protectedHeader}.${b64url(JSON.stringify(payload))}`;
    const signature = await this.sign(signingInput, { dsaEncoding: 'ieee-p1363' });
    return `${signingInput}.${b64url(signature)}`;
  }

  /** A PKCS#10 certificate request (DER) signed by the HSM key. */
  async certificateRequest(subject: string, san?: SubjectAltNames): Promise<Buffer> {
    return certificates().certificateRequest(this.spki, this.cryptoKey, subject, san);
  }

  /** A self-signed leaf certificate (DER), for development. */
  async selfSignedCertificate(options: { subject: string; san?: SubjectAltNames; days: number }): Promise<Buffer> {
    return certificates().selfSignedCertificate(this.spki, this.cryptoKey, options);
  }

  private signWire(algorithm: WireAlgorithm, message: Buffer): Promise<Buffer> {
    const hash = nodeHashOf(algorithm);
    if (hash === undefined) return this.client.sign(this.key.name, 'ED25519', message);
    return this.client.sign(this.key.name, WIRE_NAMES[algorithm], createHash(hash).update(message).digest());
  }
}
