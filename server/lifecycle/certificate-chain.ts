import { createHash, X509Certificate } from 'node:crypto';
import { certificateNames } from '../../common/x509/certificates';
import type { HsmModule } from '../pkcs11/hsm-module';
import { orderChain } from '../pkcs11/key-store';
import { storeCertificate } from '../pkcs11/token-admin';
import { tolerate } from '../pkcs11/ckr';
import { certificatesWithId } from '../pkcs11/token-objects';
import { errorMessage } from '../../common/errors';

export type ChainRefusal = 'no-certificate' | 'not-a-certificate' | 'public-key-mismatch' | 'broken-chain' | 'expired';

/** A chain that must not be installed; `reason` is stable, for scripts. */
export class ChainRefusedError extends Error {
  override readonly name = 'ChainRefusedError';

  constructor(readonly reason: ChainRefusal, message: string) {
    super(message);
  }
}

export interface CheckedChain {
  /** DER, leaf first, each certificate followed by its issuer. */
  chain: Buffer[];
  leaf: X509Certificate;
  warnings: string[];
}

const fingerprint = (spki: Buffer): string => createHash('sha256').update(spki).digest('hex').slice(0, 16);
const oneLine = (name: string): string => name.replace(/\n/g, ', ');

/**
 * Checks a certificate chain for a key before it is installed: the leaf's public key is the key's,
 * every other certificate is the issuer of the one before (name and signature), nothing is
 * expired, and nothing unrelated is included. The input may be in any order; the result is
 * leaf first.
 */
export function checkChain(keySpki: Buffer, certificates: Buffer[], now = new Date()): CheckedChain {
  const unique = certificates.filter((der, i) => certificates.findIndex((o) => o.equals(der)) === i);
  if (unique.length === 0) throw new ChainRefusedError('no-certificate', 'the file holds no PEM CERTIFICATE block');
  const parsed = unique.map((der, i) => {
    try {
      return new X509Certificate(der);
    } catch (err) {
      throw new ChainRefusedError('not-a-certificate', `certificate ${i + 1} in the file cannot be parsed: ${errorMessage(err)}`);
    }
  });
  const spkiOf = (c: X509Certificate): Buffer => c.publicKey.export({ type: 'spki', format: 'der' });
  if (!parsed.some((c) => spkiOf(c).equals(keySpki))) {
    const leafLike = parsed.find((c) => !c.ca) ?? parsed[0];
    throw new ChainRefusedError('public-key-mismatch',
      `no certificate in the file is for this key: the key's public key has SHA-256 ${fingerprint(keySpki)}..., `
      + `"${oneLine(leafLike.subject)}" has ${fingerprint(spkiOf(leafLike))}...`);
  }
  const chain = orderChain(unique, keySpki);
  const stray = unique.filter((der) => !chain.some((c) => c.equals(der)));
  const ordered = chain.map((der) => new X509Certificate(der));
  if (stray.length) {
    const last = ordered[ordered.length - 1];
    throw new ChainRefusedError('broken-chain',
      `"${oneLine(new X509Certificate(stray[0]).subject)}" is not part of the leaf's chain (the chain stops at "${oneLine(last.subject)}", issued by "${oneLine(last.issuer)}")`);
  }
  for (let i = 0; i + 1 < ordered.length; i++) {
    const child = ordered[i];
    const parent = ordered[i + 1];
    if (!child.checkIssued(parent) || !child.verify(parent.publicKey)) {
      throw new ChainRefusedError('broken-chain', `the signature on "${oneLine(child.subject)}" does not verify with the key of "${oneLine(parent.subject)}"`);
    }
    if (!parent.ca) throw new ChainRefusedError('broken-chain', `"${oneLine(parent.subject)}" issues "${oneLine(child.subject)}" but is not a CA certificate (basicConstraints)`);
  }
  const top = ordered[ordered.length - 1];
  if (top.checkIssued(top) && !top.verify(top.publicKey)) {
    throw new ChainRefusedError('broken-chain', `the self-signed certificate "${oneLine(top.subject)}" has an invalid signature`);
  }
  const warnings: string[] = [];
  for (const c of ordered) {
    if (new Date(c.validTo).getTime() < now.getTime()) throw new ChainRefusedError('expired', `"${oneLine(c.subject)}" expired on ${new Date(c.validTo).toISOString()}`);
    if (new Date(c.validFrom).getTime() > now.getTime()) warnings.push(`"${oneLine(c.subject)}" is not valid before ${new Date(c.validFrom).toISOString()}`);
  }
  if (ordered[0].ca) warnings.push('the leaf is a CA certificate (basicConstraints CA:TRUE)');
  return { chain, leaf: ordered[0], warnings };
}

export interface InstallResult {
  /** Certificate objects created. */
  stored: number;
  /** Certificate objects that were under the key's CKA_ID before and were deleted. */
  removed: number;
  /** The same chain was already installed: nothing changed. */
  unchanged: boolean;
}

/**
 * Stores a checked chain on the token under the key's CKA_ID, where GetKey finds it. The new
 * objects are created first and the old ones deleted after, so a reader never sees no chain; if
 * a create fails, the objects already created are removed and the old chain stays.
 */
export function installChain(module: HsmModule, session: Buffer, key: { label: string; id: Buffer }, chain: Buffer[]): InstallResult {
  if (key.id.length === 0) throw new Error(`key "${key.label}" has an empty CKA_ID; the gateway finds certificates by CKA_ID, so a chain cannot be attached to it`);
  const existing = certificatesWithId(module, session, key.id);
  if (existing.length === chain.length && chain.every((der) => existing.some((e) => e.der.equals(der)))) {
    return { stored: 0, removed: 0, unchanged: true };
  }
  const created: Buffer[] = [];
  try {
    chain.forEach((der, i) => {
      created.push(storeCertificate(module, session, key.id, i === 0 ? key.label : `${key.label} chain ${i}`, der, certificateNames(der)));
    });
  } catch (err) {
    for (const h of created) tolerate(() => module.p11.C_DestroyObject(session, h), 'CKR_OBJECT_HANDLE_INVALID');
    throw err;
  }
  for (const old of existing) tolerate(() => module.p11.C_DestroyObject(session, old.handle), 'CKR_OBJECT_HANDLE_INVALID');
  return { stored: chain.length, removed: existing.length, unchanged: false };
}
