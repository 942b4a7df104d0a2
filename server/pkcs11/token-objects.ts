/**
 * Reading the token's objects, once for every caller: attribute values, flags and numbers, the
 * certificates stored under a key's CKA_ID, and how a config entry (label, id, RFC 7512 URI)
 * selects a key.
 */
import * as pkcs11js from 'pkcs11js';
import type { KeyConfig } from '../config/gateway-config';
import type { HsmModule } from './hsm-module';
import { parsePkcs11Uri } from './rfc7512';

/** More certificate objects than this under one CKA_ID is not a chain but a mistake. */
const MAX_CERTIFICATES_PER_KEY = 32;

export function readAttribute(module: HsmModule, session: Buffer, handle: Buffer, type: number): Buffer {
  return module.p11.C_GetAttributeValue(session, handle, [{ type }])[0].value as Buffer;
}

export function readFlag(module: HsmModule, session: Buffer, handle: Buffer, type: number): boolean {
  const v = readAttribute(module, session, handle, type);
  return v.length > 0 && v[0] !== 0;
}

/** A CK_ULONG attribute (8 bytes on 64-bit modules, 4 on others). */
export function readUlong(module: HsmModule, session: Buffer, handle: Buffer, type: number): number {
  const v = readAttribute(module, session, handle, type);
  return v.length >= 8 ? Number(v.readBigUInt64LE(0)) : v.readUInt32LE(0);
}

/** Every certificate object stored under a CKA_ID, with its DER value. */
export function certificatesWithId(module: HsmModule, session: Buffer, id: Buffer): Array<{ handle: Buffer; der: Buffer }> {
  if (id.length === 0) return [];
  const handles = module.findObjects(session, [{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_CERTIFICATE }, { type: pkcs11js.CKA_ID, value: id }], MAX_CERTIFICATES_PER_KEY);
  return handles.map((handle) => ({ handle, der: readAttribute(module, session, handle, pkcs11js.CKA_VALUE) }));
}

/**
 * The CKA_LABEL and CKA_ID (hex) a config entry asks for: its own label/id, completed from its
 * URI's object/id. Throws when the URI does not parse.
 */
export function keySelector(entry: KeyConfig): { label?: string; id?: string } {
  let label = entry.label;
  let id = entry.id;
  if (entry.uri !== undefined) {
    const uri = parsePkcs11Uri(entry.uri);
    label ??= uri.object;
    id ??= uri.id;
  }
  return { label, id };
}
