/**
 * The root secret of the session-ticket keys: a CKK_GENERIC_SECRET on the token that only MACs
 * (CKM_SHA256_HMAC). It is sensitive and never extractable, so no ticket key can be computed
 * without the HSM, and the gateway refuses to start with one that could leave the token.
 */
import * as pkcs11js from 'pkcs11js';
import type { HsmModule } from './hsm-module';

/** 256 bits, the HMAC-SHA256 block-size-safe length. */
const ROOT_BYTES = 32;

export class TicketRootError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TicketRootError';
  }
}

export function findSecretKeyByLabel(module: HsmModule, session: Buffer, label: string): Buffer | undefined {
  return module.findObjects(session, [{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY }, { type: pkcs11js.CKA_LABEL, value: label }], 1)[0];
}

/** The root's handle, after checking it is a generic secret that can only be used in the HSM. */
export function findTicketRoot(module: HsmModule, session: Buffer, label: string): Buffer {
  const handle = findSecretKeyByLabel(module, session, label);
  if (!handle) throw new TicketRootError(`ticketKeys.root: no secret key labelled "${label}" on the token (create it with: hsm-gateway key generate --type ticket-root --name ${label})`);
  const attrs = module.p11.C_GetAttributeValue(session, handle, [
    { type: pkcs11js.CKA_KEY_TYPE }, { type: pkcs11js.CKA_SENSITIVE }, { type: pkcs11js.CKA_EXTRACTABLE }, { type: pkcs11js.CKA_SIGN },
  ]);
  const value = (type: number): Buffer | undefined => attrs.find((a) => a.type === type)?.value as Buffer | undefined;
  const flag = (type: number): boolean => (value(type)?.[0] ?? 0) !== 0;
  const typeBytes = value(pkcs11js.CKA_KEY_TYPE);
  // CK_ULONG, native byte order (little-endian here).
  const keyType = typeBytes && (typeBytes.length >= 8 ? Number(typeBytes.readBigUInt64LE(0)) : typeBytes.readUInt32LE(0));
  if (keyType !== pkcs11js.CKK_GENERIC_SECRET) throw new TicketRootError(`ticketKeys.root: "${label}" is not a CKK_GENERIC_SECRET key`);
  if (!flag(pkcs11js.CKA_SENSITIVE) || flag(pkcs11js.CKA_EXTRACTABLE)) {
    throw new TicketRootError(`ticketKeys.root: "${label}" is extractable or not sensitive: its value could leave the token; generate a new root with hsm-gateway key generate --type ticket-root`);
  }
  if (!flag(pkcs11js.CKA_SIGN)) throw new TicketRootError(`ticketKeys.root: "${label}" may not sign (CKA_SIGN is false), so it cannot MAC`);
  return handle;
}

/** HMAC-SHA256 of `data` with the root, computed inside the HSM. */
export function macWithTicketRoot(module: HsmModule, session: Buffer, root: Buffer, data: Buffer): Buffer {
  module.p11.C_SignInit(session, { mechanism: pkcs11js.CKM_SHA256_HMAC }, root);
  return module.p11.C_Sign(session, data, Buffer.alloc(32));
}

/** Generates a root inside the token: sensitive, never extractable, MAC only. */
export function generateTicketRoot(module: HsmModule, session: Buffer, label: string): void {
  if (findSecretKeyByLabel(module, session, label)) throw new Error(`a secret key labelled "${label}" already exists on the token; refusing to overwrite it`);
  module.p11.C_GenerateKey(session, { mechanism: pkcs11js.CKM_GENERIC_SECRET_KEY_GEN }, [
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
    { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_GENERIC_SECRET },
    { type: pkcs11js.CKA_VALUE_LEN, value: ROOT_BYTES },
    { type: pkcs11js.CKA_TOKEN, value: true },
    { type: pkcs11js.CKA_PRIVATE, value: true },
    { type: pkcs11js.CKA_LABEL, value: label },
    { type: pkcs11js.CKA_SENSITIVE, value: true },
    { type: pkcs11js.CKA_EXTRACTABLE, value: false },
    { type: pkcs11js.CKA_SIGN, value: true },
    { type: pkcs11js.CKA_VERIFY, value: false },
    { type: pkcs11js.CKA_ENCRYPT, value: false },
    { type: pkcs11js.CKA_DECRYPT, value: false },
    { type: pkcs11js.CKA_WRAP, value: false },
    { type: pkcs11js.CKA_UNWRAP, value: false },
    { type: pkcs11js.CKA_DERIVE, value: false },
  ]);
}
