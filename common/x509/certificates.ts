import { webcrypto, X509Certificate as NodeX509 } from 'node:crypto';
import * as x509 from './x509-library';
import { createRemoteCrypto, type RemoteCryptoKey } from './remote-crypto';
import { curveByName, hashByWebCryptoName, HASHES } from '../algorithms';
import { errorMessage } from '../errors';

export interface SubjectAltNames {
  dns?: string[];
  ip?: string[];
  uri?: string[];
  email?: string[];
}

function sanExtension(san: SubjectAltNames): x509.Extension {
  const names: x509.JsonGeneralName[] = [
    ...(san.dns ?? []).map((value) => ({ type: 'dns' as const, value })),
    ...(san.ip ?? []).map((value) => ({ type: 'ip' as const, value })),
    ...(san.uri ?? []).map((value) => ({ type: 'url' as const, value })),
    ...(san.email ?? []).map((value) => ({ type: 'email' as const, value })),
  ];
  return new x509.SubjectAlternativeNameExtension(names, false);
}

function hasNames(san: SubjectAltNames | undefined): san is SubjectAltNames {
  return san !== undefined && [san.dns, san.ip, san.uri, san.email].some((list) => (list?.length ?? 0) > 0);
}

function spkiKey(spki: Buffer): x509.PublicKey {
  return new x509.PublicKey(spki.buffer.slice(spki.byteOffset, spki.byteOffset + spki.byteLength) as ArrayBuffer);
}


/**
 * The signature algorithm X.509 objects signed by `key` use: the key's hash (for EC keys without
 * one, the hash that matches the curve: P-256/SHA-256, P-384/SHA-384, P-521/SHA-512) and, for
 * RSA-PSS, a salt as long as the hash (what the gateway's PSS mechanism uses).
 */
export function signingAlgorithmFor(key: RemoteCryptoKey): { name: string; hash?: { name: string }; saltLength?: number } {
  const { name } = key.algorithm;
  if (name === 'Ed25519') return { name };
  const curve = curveByName(key.algorithm.namedCurve ?? '');
  const hash = key.algorithm.hash ?? { name: HASHES[curve?.hash ?? 'sha256'].webCrypto };
  return name === 'RSA-PSS' ? { name, hash, saltLength: hashByWebCryptoName(hash.name)?.length } : { name, hash };
}

export interface SelfSignedOptions {
  subject: string;
  san?: SubjectAltNames;
  days: number;
  /** For a leaf used by TLS servers (and clients). */
  serverAuth?: boolean;
}

/** A self-signed leaf certificate whose signature is made by a remote (HSM) key. */
export async function selfSignedCertificate(spki: Buffer, key: RemoteCryptoKey, options: SelfSignedOptions): Promise<Buffer> {
  const crypto = createRemoteCrypto();
  const publicKey = spkiKey(spki);
  const notBefore = new Date(Date.now() - 5 * 60_000);
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    await x509.SubjectKeyIdentifierExtension.create(publicKey, false, crypto),
  ];
  if (options.serverAuth !== false) extensions.push(new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth], false));
  if (hasNames(options.san)) extensions.push(sanExtension(options.san));
  const cert = await x509.X509CertificateGenerator.create({
    subject: options.subject,
    issuer: options.subject,
    notBefore,
    notAfter: new Date(notBefore.getTime() + options.days * 86_400_000),
    publicKey,
    signingKey: key as unknown as webcrypto.CryptoKey,
    signingAlgorithm: signingAlgorithmFor(key),
    extensions,
  }, crypto);
  return Buffer.from(cert.rawData);
}

/** A PKCS#10 request whose signature is made by a remote (HSM) key. */
export async function certificateRequest(spki: Buffer, key: RemoteCryptoKey, subject: string, san?: SubjectAltNames): Promise<Buffer> {
  const crypto = createRemoteCrypto();
  const publicKey = spkiKey(spki);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: subject,
    keys: { publicKey: await publicKey.export(crypto), privateKey: key as unknown as webcrypto.CryptoKey },
    signingAlgorithm: signingAlgorithmFor(key),
    extensions: hasNames(san) ? [sanExtension(san)] : [],
  }, crypto);
  return Buffer.from(csr.rawData);
}

export type PemLabel = 'CERTIFICATE' | 'CERTIFICATE REQUEST';

export function toPem(der: Buffer, label: PemLabel): string {
  const b64 = der.toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '');
  return `-----BEGIN ${label}-----\n${b64}\n-----END ${label}-----\n`;
}

/** The DER contents of every PEM block with this label, in file order (other blocks are ignored). */
export function fromPem(text: string, label: PemLabel): Buffer[] {
  const out: Buffer[] = [];
  const re = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/g;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    if (m[1] === label) out.push(Buffer.from(m[2].replace(/\s+/g, ''), 'base64'));
  }
  return out;
}

/**
 * Checks a distinguished name such as "CN=www.example.com, O=Example" (RDNs in encoding order, as
 * OpenSSL prints them) and returns it unchanged. Throws with a one-line reason.
 */
export function checkDistinguishedName(subject: string): string {
  if (!/^\s*([A-Za-z]+|\d+(\.\d+)+)\s*=/.test(subject)) throw new Error(`"${subject}" is not a distinguished name such as "CN=www.example.com, O=Example"`);
  let rdns: number;
  try {
    rdns = new x509.Name(subject).toJSON().length;
  } catch (err) {
    throw new Error(`"${subject}": ${errorMessage(err)}`);
  }
  if (rdns === 0) throw new Error(`"${subject}" has no attribute`);
  return subject;
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const DNS_NAME = /^(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/**
 * Parses "dns:www.example.com,dns:example.com,ip:192.0.2.1,uri:spiffe://x/y,email:a@example.com"
 * (also accepted: upper case prefixes, and repeated calls merged by the caller).
 */
export function parseSubjectAltNames(text: string): SubjectAltNames {
  const san: Required<SubjectAltNames> = { dns: [], ip: [], uri: [], email: [] };
  for (const raw of text.split(',').map((s) => s.trim()).filter(Boolean)) {
    const colon = raw.indexOf(':');
    const kind = colon > 0 ? raw.slice(0, colon).toLowerCase() : '';
    const value = raw.slice(colon + 1);
    switch (kind) {
      case 'dns':
        if (!DNS_NAME.test(value)) throw new Error(`"${raw}": not a DNS name`);
        san.dns.push(value);
        break;
      case 'ip':
        if (!IPV4.test(value) && !/^[0-9A-Fa-f:]+(:\d+\.\d+\.\d+\.\d+)?$/.test(value)) throw new Error(`"${raw}": not an IPv4 or IPv6 address`);
        san.ip.push(value);
        break;
      case 'uri':
        if (!/^[A-Za-z][A-Za-z0-9+.-]*:\S+$/.test(value)) throw new Error(`"${raw}": not a URI`);
        san.uri.push(value);
        break;
      case 'email':
        if (!/^[^@\s]+@[^@\s]+$/.test(value)) throw new Error(`"${raw}": not an e-mail address`);
        san.email.push(value);
        break;
      default:
        throw new Error(`"${raw}": expected dns:NAME, ip:ADDRESS, uri:URI or email:ADDRESS`);
    }
  }
  return san;
}

/** DER subject, issuer and serial (INTEGER) of a certificate, for CKA_SUBJECT/CKA_ISSUER/CKA_SERIAL_NUMBER. */
export function certificateNames(der: Buffer): { subject: Buffer; issuer: Buffer; serial: Buffer } {
  const cert = new x509.X509Certificate(der);
  let serial = Buffer.from(new NodeX509(der).serialNumber, 'hex');
  if (serial[0] & 0x80) serial = Buffer.concat([Buffer.from([0]), serial]);
  return {
    subject: Buffer.from(cert.subjectName.toArrayBuffer()),
    issuer: Buffer.from(cert.issuerName.toArrayBuffer()),
    serial: Buffer.concat([Buffer.from([0x02, serial.length]), serial]),
  };
}
