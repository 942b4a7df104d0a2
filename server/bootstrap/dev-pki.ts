import * as fs from 'node:fs';
import * as path from 'node:path';
import { webcrypto } from 'node:crypto';
import * as x509 from '../../common/x509/x509-library';
import { writePemFile } from '../../common/pem-file';

/** @peculiar/x509 names the DOM's WebCrypto types; Node's are the same objects under other names. */
type X509Crypto = Parameters<typeof x509.cryptoProvider.set>[0];
type X509Key = x509.X509CertificateCreateWithKeyParams['signingKey'];
type X509KeyPair = x509.X509CertificateCreateSelfSignedParams['keys'];

const EC = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SIGN = { name: 'ECDSA', hash: 'SHA-256' } as const;

export interface IssuedIdentity {
  certPem: string;
  keyPem: string;
}

export interface CertificateAuthority extends IssuedIdentity {
  keys: webcrypto.CryptoKeyPair;
  cert: x509.X509Certificate;
}

export interface LeafOptions {
  commonName: string;
  dns?: string[];
  ip?: string[];
  uri?: string[];
  usage: 'server' | 'client';
  notBefore?: Date;
  notAfter?: Date;
  /** Key usage override, for tests of wrong-usage certificates. */
  keyUsage?: number;
}

async function keyPem(key: webcrypto.CryptoKey): Promise<string> {
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', key));
  return `-----BEGIN PRIVATE KEY-----\n${der.toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '')}\n-----END PRIVATE KEY-----\n`;
}

/** A development certificate authority (P-256, file keys): for the embedded default and tests only. */
export async function createCertificateAuthority(commonName: string, days = 3650): Promise<CertificateAuthority> {
  x509.cryptoProvider.set(webcrypto as unknown as X509Crypto);
  const keys = await webcrypto.subtle.generateKey(EC, true, ['sign', 'verify']) as webcrypto.CryptoKeyPair;
  const notBefore = new Date(Date.now() - 5 * 60_000);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    name: `CN=${commonName}`,
    notBefore,
    notAfter: new Date(notBefore.getTime() + days * 86_400_000),
    keys: keys as unknown as X509KeyPair,
    signingAlgorithm: SIGN,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey as unknown as X509Key),
    ],
  });
  return { keys, cert, certPem: cert.toString('pem') + '\n', keyPem: await keyPem(keys.privateKey) };
}

/** A leaf certificate and key issued by the CA. */
export async function issueLeaf(ca: CertificateAuthority, options: LeafOptions): Promise<IssuedIdentity> {
  x509.cryptoProvider.set(webcrypto as unknown as X509Crypto);
  const keys = await webcrypto.subtle.generateKey(EC, true, ['sign', 'verify']) as webcrypto.CryptoKeyPair;
  const notBefore = options.notBefore ?? new Date(Date.now() - 5 * 60_000);
  const names: x509.JsonGeneralName[] = [
    ...(options.uri ?? []).map((value) => ({ type: 'url' as const, value })),
    ...(options.dns ?? []).map((value) => ({ type: 'dns' as const, value })),
    ...(options.ip ?? []).map((value) => ({ type: 'ip' as const, value })),
  ];
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(options.keyUsage ?? x509.KeyUsageFlags.digitalSignature, true),
    new x509.ExtendedKeyUsageExtension([options.usage === 'server' ? x509.ExtendedKeyUsage.serverAuth : x509.ExtendedKeyUsage.clientAuth], false),
    await x509.AuthorityKeyIdentifierExtension.create(ca.cert, false),
  ];
  if (names.length) extensions.push(new x509.SubjectAlternativeNameExtension(names, false));
  const cert = await x509.X509CertificateGenerator.create({
    subject: `CN=${options.commonName}`,
    issuer: ca.cert.subject,
    notBefore,
    notAfter: options.notAfter ?? new Date(notBefore.getTime() + 825 * 86_400_000),
    publicKey: keys.publicKey as unknown as X509Key,
    signingKey: ca.keys.privateKey as unknown as X509Key,
    signingAlgorithm: SIGN,
    extensions,
  });
  return { certPem: cert.toString('pem') + '\n', keyPem: await keyPem(keys.privateKey) };
}

export const DEV_CLIENT_IDENTITY = 'spiffe://hsm-gateway.dev/proxy';

export interface DevPkiPaths { ca: string; caKey: string; serverCert: string; serverKey: string; clientCert: string; clientKey: string }

export function devPkiPaths(dir: string): DevPkiPaths {
  return {
    ca: path.join(dir, 'ca.pem'), caKey: path.join(dir, 'ca.key'),
    serverCert: path.join(dir, 'server.pem'), serverKey: path.join(dir, 'server.key'),
    clientCert: path.join(dir, 'client.pem'), clientKey: path.join(dir, 'client.key'),
  };
}

/** The development PKI: a CA, a server certificate for localhost/127.0.0.1 and one client identity. */
export async function ensureDevPki(dir: string): Promise<{ paths: DevPkiPaths; created: boolean }> {
  const paths = devPkiPaths(dir);
  if (Object.values(paths).every((p) => fs.existsSync(p))) return { paths, created: false };
  const ca = await createCertificateAuthority('hsm-gateway dev CA');
  const server = await issueLeaf(ca, { commonName: 'hsm-gateway', dns: ['localhost'], ip: ['127.0.0.1', '::1'], usage: 'server' });
  const client = await issueLeaf(ca, { commonName: 'dev-proxy', uri: [DEV_CLIENT_IDENTITY], usage: 'client' });
  writePemFile(paths.ca, ca.certPem, 0o644);
  writePemFile(paths.caKey, ca.keyPem, 0o600);
  writePemFile(paths.serverCert, server.certPem, 0o644);
  writePemFile(paths.serverKey, server.keyPem, 0o600);
  writePemFile(paths.clientCert, client.certPem, 0o644);
  writePemFile(paths.clientKey, client.keyPem, 0o600);
  return { paths, created: true };
}
