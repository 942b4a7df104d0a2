import { createHash, X509Certificate } from 'node:crypto';
import * as pkcs11js from 'pkcs11js';
import { KeyType } from '../../proto/generated/hsmgateway/v1/signer';
import type { KeyConfig } from '../config/gateway-config';
import type { HsmModule } from '../pkcs11/hsm-module';
import { orderChain, resolveKey, type ResolvedKey } from '../pkcs11/key-store';
import { certificatesWithId, keySelector, readAttribute, readFlag } from '../pkcs11/token-objects';
import { errorMessage } from '../../common/errors';

/** Private-key attributes that say whether the key can leave the token and what it may do. */
export interface KeyFlags {
  sensitive: boolean;
  alwaysSensitive: boolean;
  extractable: boolean;
  neverExtractable: boolean;
  /** Generated on the token (not imported). */
  local: boolean;
  sign: boolean;
  decrypt: boolean;
  unwrap: boolean;
  derive: boolean;
}

export interface InstalledCertificate {
  subject: string;
  issuer: string;
  serial: string;
  notBefore: string;
  notAfter: string;
  expired: boolean;
  /** Certificates in the chain stored with the key, the leaf included. */
  chainLength: number;
  fingerprint256: string;
}

/** One private key on the token, as `key list` shows it. */
export interface TokenKey {
  label: string;
  /** CKA_ID, lowercase hex. */
  id: string;
  type: 'EC' | 'RSA' | 'ED25519' | 'unknown';
  bits?: number;
  curve?: string;
  flags: KeyFlags;
  /** SHA-256 of the SubjectPublicKeyInfo (hex): compare with `openssl x509 -pubkey | openssl pkey -pubin -outform DER | sha256sum`. */
  publicKeySha256?: string;
  certificate?: InstalledCertificate;
  /** Certificate objects under the key's CKA_ID that are not in its chain. */
  strayCertificates: number;
  /** Names in the gateway config (keys[].name) that select this key. */
  gatewayNames: string[];
  /** Why the key could not be fully described (e.g. no public key object for an EC key). */
  problem?: string;
}

function flag(module: HsmModule, session: Buffer, handle: Buffer, type: number): boolean {
  try {
    return readFlag(module, session, handle, type);
  } catch {
    return false;
  }
}

export function keyFlags(module: HsmModule, session: Buffer, handle: Buffer): KeyFlags {
  const f = (type: number): boolean => flag(module, session, handle, type);
  return {
    sensitive: f(pkcs11js.CKA_SENSITIVE),
    alwaysSensitive: f(pkcs11js.CKA_ALWAYS_SENSITIVE),
    extractable: f(pkcs11js.CKA_EXTRACTABLE),
    neverExtractable: f(pkcs11js.CKA_NEVER_EXTRACTABLE),
    local: f(pkcs11js.CKA_LOCAL),
    sign: f(pkcs11js.CKA_SIGN),
    decrypt: f(pkcs11js.CKA_DECRYPT),
    unwrap: f(pkcs11js.CKA_UNWRAP),
    derive: f(pkcs11js.CKA_DERIVE),
  };
}

/** True when a gateway key entry (label, id and/or RFC 7512 URI) selects this token key. */
export function configSelects(entry: KeyConfig, label: string, id: string): boolean {
  let wanted: { label?: string; id?: string };
  try {
    wanted = keySelector(entry);
  } catch {
    return false; // a URI that does not parse selects nothing
  }
  const { label: wantLabel, id: wantId } = wanted;
  if (wantLabel === undefined && wantId === undefined) return false;
  return (wantLabel === undefined || wantLabel === label) && (wantId === undefined || wantId === id);
}

const TYPE_NAMES: Record<number, TokenKey['type']> = { [KeyType.KEY_TYPE_EC]: 'EC', [KeyType.KEY_TYPE_RSA]: 'RSA', [KeyType.KEY_TYPE_ED25519]: 'ED25519' };

function describeCertificate(chain: Buffer[], now: Date): InstalledCertificate {
  const leaf = new X509Certificate(chain[0]);
  return {
    subject: leaf.subject.replace(/\n/g, ', '),
    issuer: leaf.issuer.replace(/\n/g, ', '),
    serial: leaf.serialNumber.toLowerCase(),
    notBefore: new Date(leaf.validFrom).toISOString(),
    notAfter: new Date(leaf.validTo).toISOString(),
    expired: new Date(leaf.validTo).getTime() < now.getTime(),
    chainLength: chain.length,
    fingerprint256: leaf.fingerprint256,
  };
}

/** Describes one private key object: type, flags, installed chain, gateway names. */
export function describeTokenKey(module: HsmModule, session: Buffer, handle: Buffer, gatewayKeys: KeyConfig[], now = new Date()): TokenKey {
  const label = readAttribute(module, session, handle, pkcs11js.CKA_LABEL).toString('utf8');
  const idBytes = readAttribute(module, session, handle, pkcs11js.CKA_ID);
  const id = idBytes.toString('hex');
  const out: TokenKey = {
    label, id, type: 'unknown', flags: keyFlags(module, session, handle), strayCertificates: 0,
    gatewayNames: gatewayKeys.filter((k) => configSelects(k, label, id)).map((k) => k.name),
  };
  let resolved: ResolvedKey;
  try {
    // Select by CKA_ID when there is one (labels need not be unique), else by label.
    resolved = resolveKey(module, session, id ? { name: label || id, id } : { name: label, label });
  } catch (err) {
    out.problem = errorMessage(err);
    return out;
  }
  out.type = TYPE_NAMES[resolved.type] ?? 'unknown';
  if (resolved.type === KeyType.KEY_TYPE_RSA) out.bits = resolved.bits;
  else out.curve = resolved.curve;
  out.publicKeySha256 = createHash('sha256').update(resolved.spki).digest('hex');
  const stored = certificatesWithId(module, session, idBytes);
  const chain = orderChain(stored.map((c) => c.der), resolved.spki);
  if (chain.length) out.certificate = describeCertificate(chain, now);
  out.strayCertificates = stored.length - chain.length;
  return out;
}

/** Every private key on the token, sorted by label. */
export function listTokenKeys(module: HsmModule, session: Buffer, gatewayKeys: KeyConfig[]): TokenKey[] {
  const handles = module.findObjects(session, [{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY }], 4096);
  return handles.map((h) => describeTokenKey(module, session, h, gatewayKeys)).sort((a, b) => a.label.localeCompare(b.label) || a.id.localeCompare(b.id));
}

/** Finds exactly one private key by label or CKA_ID (hex); the error says what to do when ambiguous. */
export function findOneKey(module: HsmModule, session: Buffer, selector: { label?: string; id?: string }): Buffer {
  const template: pkcs11js.Template = [{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY }];
  if (selector.label !== undefined) template.push({ type: pkcs11js.CKA_LABEL, value: selector.label });
  if (selector.id !== undefined) template.push({ type: pkcs11js.CKA_ID, value: Buffer.from(selector.id, 'hex') });
  const what = [selector.label !== undefined && `label "${selector.label}"`, selector.id !== undefined && `id ${selector.id}`].filter(Boolean).join(' and ');
  const handles = module.findObjects(session, template, 2);
  if (handles.length === 0) throw new KeyNotFoundError(`no private key with ${what} on the token (see "hsm-gateway key list")`);
  if (handles.length > 1) throw new KeyNotFoundError(`more than one private key with ${what}; select it with --id`);
  return handles[0];
}

export class KeyNotFoundError extends Error {
  override readonly name = 'KeyNotFoundError';
}
