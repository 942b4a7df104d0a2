import { createHash, createPublicKey, type KeyObject, type webcrypto } from 'node:crypto';
import { status } from '@grpc/grpc-js';
import type { AlgorithmName, GatewayClient, KeyDescription } from './gateway-client';
import { GatewayClientError } from './gateway-client-error';
import {
  algorithmFor, algorithmSpec, curveByName, hashByWebCryptoName, HASHES, KeyType, keyKindOf, keyTypeByName, type AlgorithmSpec, type CurveSpec, type KeyKind, type WebCryptoHash,
} from '../common/algorithms';
import { createRemoteCrypto, ecdsaDerToRaw, remoteCryptoKey, type RemoteCryptoKey } from '../common/x509/remote-crypto';
import type { SubjectAltNames } from '../common/x509/certificates';

export type HashName = WebCryptoHash;

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

function kindOf(key: KeyDescription): KeyKind {
  return keyKindOf(key.name, keyTypeByName(key.type), key.curve);
}

type CertificatesModule = typeof import('../common/x509/certificates');
let certificatesModule: CertificatesModule | undefined;

/**
 * Loaded on first use: @peculiar/x509 and reflect-metadata add ~80 ms to a client's start-up, and
 * they are optional peer dependencies of @hsm-gateway/client (only the X.509 helpers need them).
 */
function certificates(): CertificatesModule {
  if (certificatesModule !== undefined) return certificatesModule;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    certificatesModule = require('../common/x509/certificates') as CertificatesModule;
  } catch (error) {
    const missing = ['@peculiar/x509', 'reflect-metadata'].find((name) => error instanceof Error && (error as NodeJS.ErrnoException).code === 'MODULE_NOT_FOUND' && error.message.includes(`'${name}'`));
    if (missing === undefined) throw error;
    throw new Error(`GatewaySigner's X.509 helpers need ${missing} (optional peer dependencies of @hsm-gateway/client): npm install @peculiar/x509@^2.2.0 reflect-metadata@^0.2.2`, { cause: error });
  }
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
  private readonly spec: AlgorithmSpec;
  private cachedCrypto: webcrypto.Crypto | undefined;

  private constructor(private readonly client: GatewayClient, readonly key: KeyDescription, options: GatewaySignerOptions) {
    const kind = kindOf(key);
    const hashName: HashName = options.hash ?? (kind.kind === 'ec' ? HASHES[(curveByName(kind.curve) as CurveSpec).hash].webCrypto : 'SHA-256');
    const hash = hashByWebCryptoName(hashName);
    if (!hash || hash.webCrypto !== hashName) throw new TypeError(`GatewaySigner option hash must be SHA-256, SHA-384 or SHA-512 (got ${String(hashName)})`);
    const pss = options.rsaPadding === 'pss';
    if (options.rsaPadding !== undefined && options.rsaPadding !== 'pss' && options.rsaPadding !== 'pkcs1') throw new TypeError(`GatewaySigner option rsaPadding must be 'pkcs1' or 'pss' (got ${String(options.rsaPadding)})`);
    const spec = kind.kind === 'ed25519' ? algorithmFor(KeyType.KEY_TYPE_ED25519) : algorithmFor(keyTypeByName(key.type), hash.name, pss ? 'pss' : 'pkcs1');
    if (!spec) throw new TypeError(`key "${key.name}": no signature algorithm for ${hashName}`);
    this.spec = spec;
    this.algorithm = spec.name;
    this.jwsAlgorithm = spec.jws;
    if (!key.algorithms.includes(this.algorithm)) {
      // The gateway would answer PERMISSION_DENIED (or INVALID_ARGUMENT); say so before any signature is asked for.
      throw new GatewayClientError(status.PERMISSION_DENIED, `key "${key.name}": this client may not use ${this.algorithm} (allowed: ${key.algorithms.join(', ') || 'none'})`);
    }
    this.publicKey = createPublicKey({ key: key.publicKey, format: 'der', type: 'spki' });
    this.cryptoKey = remoteCryptoKey(kind, (algorithm, message) => this.signWire(algorithm, message), {
      hash: kind.kind === 'ed25519' ? undefined : hash.webCrypto, rsaPss: pss,
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
    const signature = await this.signWire(this.spec.algorithm, Buffer.from(data as Uint8Array));
    if (options.dsaEncoding === 'ieee-p1363' && this.key.type === 'EC') return ecdsaDerToRaw(signature, (curveByName(this.key.curve) as CurveSpec).fieldBytes);
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

  private signWire(algorithm: number, message: Buffer): Promise<Buffer> {
    const spec = algorithmSpec(algorithm);
    if (!spec) return Promise.reject(new TypeError(`unknown signature algorithm ${algorithm}`));
    // EdDSA signs the message itself; every other algorithm signs its digest, made here.
    const input = spec.hash === undefined ? message : createHash(spec.hash).update(message).digest();
    return this.client.sign(this.key.name, spec.name, input);
  }
}
