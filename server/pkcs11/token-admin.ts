/**
 * Administrative PKCS#11 operations: token initialisation, key generation inside the token,
 * certificate objects. Used by the embedded default and the admin CLI, never by the sign path.
 */
import { randomBytes } from 'node:crypto';
import { createHash } from 'node:crypto';
import * as pkcs11js from 'pkcs11js';
import type { HsmModule } from './hsm-module';
import { CKM_EC_EDWARDS_KEY_PAIR_GEN, mechanismPlan } from './mechanisms';
import type { ResolvedKey } from './key-store';
import { algorithmSpec, curveByName, ED25519_PARAMS_HEX, keyKindOf, type CurveSpec, type KeyKind } from '../../common/algorithms';

/** CK_SLOT_INFO flag; missing from pkcs11js's typings. */
const CKF_TOKEN_PRESENT = 0x1;

export type KeySpec = 'ec-p256' | 'ec-p384' | 'rsa-2048' | 'rsa-3072' | 'rsa-4096' | 'ed25519';
export const KEY_SPECS: readonly KeySpec[] = ['ec-p256', 'ec-p384', 'rsa-2048', 'rsa-3072', 'rsa-4096', 'ed25519'];

/**
 * CKA_EC_PARAMS: the curve's OID, DER. For Ed25519 the RFC 8410 OID id-Ed25519 (1.3.101.112), as
 * PKCS#11 3.0 allows and SoftHSM2 and OpenSC expect (older modules also take the PrintableString
 * "edwards25519"; the key store reads both).
 */
const EC_PARAMS: Record<string, Buffer> = {
  'ec-p256': Buffer.from((curveByName('P-256') as CurveSpec).paramsHex, 'hex'),
  'ec-p384': Buffer.from((curveByName('P-384') as CurveSpec).paramsHex, 'hex'),
  ed25519: Buffer.from(ED25519_PARAMS_HEX, 'hex'),
};

/** Initialises a fresh token in a free slot and sets its user PIN. PINs go only to PKCS#11. */
export function initToken(module: HsmModule, label: string, soPin: string, userPin: string): void {
  const p11 = module.p11;
  const free = p11.C_GetSlotList(false).find((slot) => {
    const info = p11.C_GetSlotInfo(slot);
    if ((info.flags & CKF_TOKEN_PRESENT) === 0) return false;
    return (p11.C_GetTokenInfo(slot).flags & pkcs11js.CKF_TOKEN_INITIALIZED) === 0;
  });
  if (!free) throw new Error('no free slot to initialise a token in');
  p11.C_InitToken(free, soPin, label.padEnd(32, ' '));
  module.selectToken({ label });
  const session = module.openReadWriteSession();
  try {
    p11.C_Login(session, pkcs11js.CKU_SO, soPin);
    p11.C_InitPIN(session, userPin);
    p11.C_Logout(session);
  } finally {
    module.closeSession(session);
  }
}

export function findPrivateKeyByLabel(module: HsmModule, session: Buffer, label: string): Buffer | undefined {
  return module.findObjects(session, [{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY }, { type: pkcs11js.CKA_LABEL, value: label }], 1)[0];
}

/**
 * Generates a key pair inside the token: the private key is sensitive, never extractable and
 * can only sign. Returns its fresh CKA_ID.
 */
export function generateSigningKey(module: HsmModule, session: Buffer, name: string, spec: KeySpec): Buffer {
  if (findPrivateKeyByLabel(module, session, name)) throw new Error(`a key labelled "${name}" already exists on the token; refusing to overwrite it`);
  const id = randomBytes(16);
  const common: pkcs11js.Template = [
    { type: pkcs11js.CKA_TOKEN, value: true },
    { type: pkcs11js.CKA_LABEL, value: name },
    { type: pkcs11js.CKA_ID, value: id },
  ];
  const publicTemplate: pkcs11js.Template = [...common, { type: pkcs11js.CKA_VERIFY, value: true }, { type: pkcs11js.CKA_ENCRYPT, value: false }, { type: pkcs11js.CKA_WRAP, value: false }];
  const privateTemplate: pkcs11js.Template = [
    ...common,
    { type: pkcs11js.CKA_PRIVATE, value: true },
    { type: pkcs11js.CKA_SENSITIVE, value: true },
    { type: pkcs11js.CKA_EXTRACTABLE, value: false },
    { type: pkcs11js.CKA_SIGN, value: true },
    { type: pkcs11js.CKA_DECRYPT, value: false },
    { type: pkcs11js.CKA_UNWRAP, value: false },
    { type: pkcs11js.CKA_DERIVE, value: false },
  ];
  let mechanism: pkcs11js.Mechanism;
  if (spec.startsWith('ec-')) {
    mechanism = { mechanism: pkcs11js.CKM_EC_KEY_PAIR_GEN };
    publicTemplate.push({ type: pkcs11js.CKA_EC_PARAMS, value: EC_PARAMS[spec] });
  } else if (spec === 'ed25519') {
    mechanism = { mechanism: CKM_EC_EDWARDS_KEY_PAIR_GEN };
    publicTemplate.push({ type: pkcs11js.CKA_EC_PARAMS, value: EC_PARAMS[spec] });
  } else {
    mechanism = { mechanism: pkcs11js.CKM_RSA_PKCS_KEY_PAIR_GEN };
    publicTemplate.push({ type: pkcs11js.CKA_MODULUS_BITS, value: Number(spec.slice(4)) }, { type: pkcs11js.CKA_PUBLIC_EXPONENT, value: Buffer.from([1, 0, 1]) });
  }
  module.p11.C_GenerateKeyPair(session, mechanism, publicTemplate, privateTemplate);
  return id;
}

/** Stores a DER certificate on the token under the key's CKA_ID; returns the new object's handle. */
export function storeCertificate(module: HsmModule, session: Buffer, id: Buffer, label: string, der: Buffer, names: { subject: Buffer; issuer: Buffer; serial: Buffer }): Buffer {
  return module.p11.C_CreateObject(session, [
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_CERTIFICATE },
    { type: pkcs11js.CKA_CERTIFICATE_TYPE, value: pkcs11js.CKC_X_509 },
    { type: pkcs11js.CKA_TOKEN, value: true },
    { type: pkcs11js.CKA_PRIVATE, value: false },
    { type: pkcs11js.CKA_LABEL, value: label },
    { type: pkcs11js.CKA_ID, value: id },
    { type: pkcs11js.CKA_SUBJECT, value: names.subject },
    { type: pkcs11js.CKA_ISSUER, value: names.issuer },
    { type: pkcs11js.CKA_SERIAL_NUMBER, value: names.serial },
    { type: pkcs11js.CKA_VALUE, value: der },
  ]);
}

/**
 * Signs a whole message in this process with the token (admin paths only: the gateway's sign
 * path runs on the sign threads). ECDSA comes back DER, like the gateway's answers.
 */
export function signMessageDirect(module: HsmModule, session: Buffer, key: ResolvedKey, algorithm: number, message: Buffer): Buffer {
  const spec = algorithmSpec(algorithm);
  if (!spec || !key.algorithms.includes(algorithm)) throw new Error(`algorithm ${algorithm} does not fit key "${key.name}"`);
  const data = spec.hash ? createHash(spec.hash).update(message).digest() : message;
  const plan = mechanismPlan(algorithm);
  module.p11.C_SignInit(session, plan.mechanism, key.handle);
  const raw = module.p11.C_Sign(session, plan.input(data), Buffer.alloc(key.rawSignatureLength));
  return plan.output(raw);
}

export function resolvedKeyKind(key: ResolvedKey): KeyKind {
  return keyKindOf(key.name, key.type, key.curve);
}
