import { X509Certificate, createPublicKey } from 'node:crypto';
import * as pkcs11js from 'pkcs11js';
import { KeyType, type SignatureAlgorithm } from '../../proto/generated/hsmgateway/v1/signer';
import type { KeyConfig } from '../config/gateway-config';
import { algorithmsForKeyType, curveFromParams, isEd25519Params } from '../../common/algorithms';
import type { HsmModule } from './hsm-module';
import { CKK_EC_EDWARDS } from './mechanisms';
import { ecSpki, ed25519Spki, rsaSpki } from './public-key';
import { certificatesWithId, keySelector, readAttribute, readFlag, readUlong } from './token-objects';

/** A configured key, found on the token, with everything a request needs without asking the HSM. */
export interface ResolvedKey {
  name: string;
  handle: Buffer;
  /** The module generation the handle belongs to (HsmModule.generation). */
  generation: number;
  /** CKA_ID, hex. */
  id: string;
  type: KeyType;
  bits: number;
  curve: string;
  /** SubjectPublicKeyInfo, DER. */
  spki: Buffer;
  /** Bytes the token returns from C_Sign: the modulus length, or 2 × field size for EC. */
  rawSignatureLength: number;
  algorithms: SignatureAlgorithm[];
  /** DER certificates stored with the key's CKA_ID, leaf first. */
  certificateChain: Buffer[];
  /** Private key flags, for warnings and the key list. */
  sensitive: boolean;
  extractable: boolean;
}

export interface KeyWarning { key: string; message: string }

function privateKeyTemplate(key: KeyConfig): pkcs11js.Template {
  const template: pkcs11js.Template = [{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY }];
  const { label, id } = keySelector(key);
  if (label !== undefined) template.push({ type: pkcs11js.CKA_LABEL, value: label });
  if (id !== undefined) template.push({ type: pkcs11js.CKA_ID, value: Buffer.from(id, 'hex') });
  return template;
}

function describe(key: KeyConfig): string {
  return [key.label !== undefined && `label "${key.label}"`, key.id !== undefined && `id ${key.id}`, key.uri !== undefined && `uri ${key.uri}`].filter(Boolean).join(', ');
}

/** Puts the certificate matching the key first, then each issuer after its subject. */
export function orderChain(certs: Buffer[], spki: Buffer): Buffer[] {
  const parsed = certs.map((der) => ({ der, x509: new X509Certificate(der) }));
  const leaf = parsed.find((c) => c.x509.publicKey.export({ type: 'spki', format: 'der' }).equals(spki));
  if (!leaf) return [];
  const chain = [leaf];
  const rest = parsed.filter((c) => c !== leaf);
  for (;;) {
    const last = chain[chain.length - 1].x509;
    if (last.issuer === last.subject) break;
    const i = rest.findIndex((c) => c.x509.subject === last.issuer);
    if (i === -1) break;
    chain.push(rest.splice(i, 1)[0]);
  }
  return chain.map((c) => c.der);
}

function readCertificates(module: HsmModule, session: Buffer, id: Buffer, spki: Buffer): Buffer[] {
  if (id.length === 0) return [];
  return orderChain(certificatesWithId(module, session, id).map((c) => c.der), spki);
}

/** The public point lives on the public key object (same CKA_ID) or, failing that, in a certificate. */
function findEcPoint(module: HsmModule, session: Buffer, id: Buffer): Buffer | undefined {
  const pubs = id.length ? module.findObjects(session, [{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PUBLIC_KEY }, { type: pkcs11js.CKA_ID, value: id }], 1) : [];
  if (pubs.length) return readAttribute(module, session, pubs[0], pkcs11js.CKA_EC_POINT);
  return undefined;
}

function spkiFromCertificates(module: HsmModule, session: Buffer, id: Buffer): Buffer | undefined {
  const certs = certificatesWithId(module, session, id);
  if (!certs.length) return undefined;
  const x509 = new X509Certificate(certs[0].der);
  return x509.publicKey.export({ type: 'spki', format: 'der' });
}

export function resolveKey(module: HsmModule, session: Buffer, key: KeyConfig): ResolvedKey {
  const handles = module.findObjects(session, privateKeyTemplate(key), 2);
  if (handles.length === 0) throw new Error(`key "${key.name}": no private key with ${describe(key)} on the token`);
  if (handles.length > 1) throw new Error(`key "${key.name}": ${describe(key)} matches more than one private key; add id to disambiguate`);
  const handle = handles[0];
  const id = readAttribute(module, session, handle, pkcs11js.CKA_ID);
  const keyType = readUlong(module, session, handle, pkcs11js.CKA_KEY_TYPE);
  const base = {
    name: key.name,
    handle,
    generation: module.generation,
    id: id.toString('hex'),
    sensitive: readFlag(module, session, handle, pkcs11js.CKA_SENSITIVE),
    extractable: readFlag(module, session, handle, pkcs11js.CKA_EXTRACTABLE),
    certificateChain: [] as Buffer[],
  };
  if (!readFlag(module, session, handle, pkcs11js.CKA_SIGN)) throw new Error(`key "${key.name}": CKA_SIGN is false; the key cannot sign`);

  let resolved: ResolvedKey;
  if (keyType === pkcs11js.CKK_RSA) {
    const modulus = readAttribute(module, session, handle, pkcs11js.CKA_MODULUS);
    const exponent = readAttribute(module, session, handle, pkcs11js.CKA_PUBLIC_EXPONENT);
    const spki = rsaSpki(modulus, exponent);
    const bits = createPublicKey({ key: spki, format: 'der', type: 'spki' }).asymmetricKeyDetails?.modulusLength ?? modulus.length * 8;
    resolved = { ...base, type: KeyType.KEY_TYPE_RSA, bits, curve: '', spki, rawSignatureLength: Math.ceil(bits / 8), algorithms: algorithmsForKeyType(KeyType.KEY_TYPE_RSA) };
  } else if (keyType === pkcs11js.CKK_EC || keyType === CKK_EC_EDWARDS) {
    const params = readAttribute(module, session, handle, pkcs11js.CKA_EC_PARAMS);
    const point = findEcPoint(module, session, id);
    if (keyType === CKK_EC_EDWARDS || isEd25519Params(params)) {
      if (!isEd25519Params(params)) throw new Error(`key "${key.name}": only Ed25519 is supported among Edwards curves`);
      const spki = point ? ed25519Spki(point) : spkiFromCertificates(module, session, id);
      if (!spki) throw new Error(`key "${key.name}": no public key object or certificate with CKA_ID ${id.toString('hex')}`);
      resolved = { ...base, type: KeyType.KEY_TYPE_ED25519, bits: 256, curve: 'Ed25519', spki, rawSignatureLength: 64, algorithms: algorithmsForKeyType(KeyType.KEY_TYPE_ED25519) };
    } else {
      const curve = curveFromParams(params);
      if (!curve) throw new Error(`key "${key.name}": unsupported EC curve (CKA_EC_PARAMS ${params.toString('hex')})`);
      const spki = point ? ecSpki(curve, point) : spkiFromCertificates(module, session, id);
      if (!spki) throw new Error(`key "${key.name}": no public key object or certificate with CKA_ID ${id.toString('hex')}`);
      const bits = curve.name === 'P-521' ? 521 : curve.fieldBytes * 8;
      resolved = { ...base, type: KeyType.KEY_TYPE_EC, bits, curve: curve.name, spki, rawSignatureLength: 2 * curve.fieldBytes, algorithms: algorithmsForKeyType(KeyType.KEY_TYPE_EC) };
    }
  } else {
    throw new Error(`key "${key.name}": unsupported CKA_KEY_TYPE 0x${keyType.toString(16)}`);
  }
  resolved.certificateChain = readCertificates(module, session, id, resolved.spki);
  return resolved;
}

/**
 * Resolves every configured key. Extractable or non-sensitive keys are refused unless allowed,
 * in which case a warning is returned for each.
 */
export function resolveKeys(module: HsmModule, session: Buffer, keys: KeyConfig[], allowExtractable: boolean): { keys: Map<string, ResolvedKey>; warnings: KeyWarning[] } {
  const out = new Map<string, ResolvedKey>();
  const warnings: KeyWarning[] = [];
  for (const cfg of keys) {
    const key = resolveKey(module, session, cfg);
    if (key.extractable || !key.sensitive) {
      const flags = `${key.extractable ? 'extractable' : ''}${key.extractable && !key.sensitive ? ' and ' : ''}${!key.sensitive ? 'not sensitive' : ''}`;
      if (!allowExtractable) throw new Error(`key "${key.name}" is ${flags}: its private part could leave the HSM. Regenerate it with CKA_SENSITIVE=true, CKA_EXTRACTABLE=false, or set pkcs11.allowExtractableKeys: true`);
      warnings.push({ key: key.name, message: `key "${key.name}" is ${flags}; accepted because pkcs11.allowExtractableKeys is true` });
    }
    out.set(cfg.name, key);
  }
  return { keys: out, warnings };
}

/** Re-reads the certificate chains (they may be replaced while the gateway runs). */
export function refreshCertificateChains(module: HsmModule, session: Buffer, keys: Map<string, ResolvedKey>): void {
  for (const key of keys.values()) {
    key.certificateChain = readCertificates(module, session, Buffer.from(key.id, 'hex'), key.spki);
  }
}
