import { webcrypto, X509Certificate as NodeX509 } from 'node:crypto';
import * as x509 from './x509-library';
import { createRemoteCrypto, type RemoteCryptoKey } from './remote-crypto';

export interface SubjectAltNames {
  dns?: string[];
  ip?: string[];
  uri?: string[];
}

function sanExtension(san: SubjectAltNames): x509.Extension {
  const names: x509.JsonGeneralName[] = [
    ...(san.dns ?? []).map((value) => ({ type: 'dns' as const, value })),
    ...(san.ip ?? []).map((value) => ({ type: 'ip' as const, value })),
    ...(san.uri ?? []).map((value) => ({ type: 'url' as const, value })),
  ];
  return new x509.SubjectAlternativeNameExtension(names, false);
}

function spkiKey(spki: Buffer): x509.PublicKey {
  return new x509.PublicKey(spki.buffer.slice(spki.byteOffset, spki.byteOffset + spki.byteLength) as ArrayBuffer);
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
  if (options.san) extensions.push(sanExtension(options.san));
  const cert = await x509.X509CertificateGenerator.create({
    subject: options.subject,
    issuer: options.subject,
    notBefore,
    notAfter: new Date(notBefore.getTime() + options.days * 86_400_000),
    publicKey,
    signingKey: key as unknown as webcrypto.CryptoKey,
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
    signingAlgorithm: key.algorithm,
    extensions: san ? [sanExtension(san)] : [],
  }, crypto);
  return Buffer.from(csr.rawData);
}

export function toPem(der: Buffer, label: 'CERTIFICATE' | 'CERTIFICATE REQUEST'): string {
  const b64 = der.toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '');
  return `-----BEGIN ${label}-----\n${b64}\n-----END ${label}-----\n`;
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
