/** Flags shared by the commands that sign X.509 objects through the gateway (csr, cert self-sign). */
import type { GatewayClient } from '../../client/gateway-client';
import { GatewaySigner, type HashName } from '../../client/gateway-signer';
import { checkDistinguishedName, parseSubjectAltNames, type SubjectAltNames } from '../../common/x509/certificates';
import { CLIENT_FLAG_SPEC, clientFromFlags, type ClientFlags } from './client-options';
import { UsageError } from '../command-support';
import { writePemFile } from '../../common/pem-file';
import { errorMessage } from '../../common/errors';

export const X509_SIGNING_FLAG_SPEC = {
  ...CLIENT_FLAG_SPEC,
  key: { type: 'string' },
  subject: { type: 'string' },
  san: { type: 'string', multiple: true },
  out: { type: 'string', short: 'o' },
  hash: { type: 'string' },
  'rsa-pss': { type: 'boolean' },
} as const;

export const X509_SIGNING_HELP = `  --key NAME          the key's name in the gateway (this client must be allowed to use it)
  --subject DN        e.g. "CN=www.example.com, O=Example" (attributes in encoding order)
  --san LIST          subject alternative names: dns:NAME,ip:ADDRESS,uri:URI,email:ADDR
                      (comma-separated; repeatable)
  --out FILE          write the PEM here (mode 0644) instead of stdout
  --hash HASH         sha256 | sha384 | sha512 (default: sha256; sha384 for P-384, sha512 for P-521)
  --rsa-pss           RSA keys: sign with RSASSA-PSS instead of PKCS#1 v1.5`;

const HASHES: Record<string, HashName> = { sha256: 'SHA-256', sha384: 'SHA-384', sha512: 'SHA-512' };

export interface X509SigningFlags extends ClientFlags {
  key?: string;
  subject?: string;
  san?: string[];
  out?: string;
  hash?: string;
  'rsa-pss'?: boolean;
}

export function parseSubject(flag: string | undefined, fallback?: string): string {
  const subject = flag ?? fallback;
  if (subject === undefined) throw new UsageError('--subject is required');
  try {
    return checkDistinguishedName(subject);
  } catch (err) {
    throw new UsageError(`--subject: ${errorMessage(err)}`);
  }
}

export function parseSans(flags: string[] | undefined): SubjectAltNames | undefined {
  if (!flags?.length) return undefined;
  try {
    return parseSubjectAltNames(flags.join(','));
  } catch (err) {
    throw new UsageError(`--san: ${errorMessage(err)}`);
  }
}

export function sanStrings(san: SubjectAltNames | undefined): string[] {
  if (!san) return [];
  return [...(san.dns ?? []).map((v) => `DNS:${v}`), ...(san.ip ?? []).map((v) => `IP:${v}`), ...(san.uri ?? []).map((v) => `URI:${v}`), ...(san.email ?? []).map((v) => `email:${v}`)];
}

/** Validates the signing flags before any connection is made. */
export function checkSigningFlags(values: X509SigningFlags): { key: string; hash?: HashName } {
  if (values.key === undefined) throw new UsageError('--key is required');
  if (values.hash !== undefined && !(values.hash.toLowerCase() in HASHES)) throw new UsageError(`--hash "${values.hash}": use sha256, sha384 or sha512`);
  return { key: values.key, hash: values.hash === undefined ? undefined : HASHES[values.hash.toLowerCase()] };
}

/** A client from the connection flags and a signer for --key (GetKey is the first call). */
export async function signerFromFlags(values: X509SigningFlags): Promise<{ client: GatewayClient; signer: GatewaySigner }> {
  const { key, hash } = checkSigningFlags(values);
  const client = clientFromFlags(values);
  try {
    const signer = await GatewaySigner.create(client, key, { hash, rsaPadding: values['rsa-pss'] ? 'pss' : 'pkcs1' });
    return { client, signer };
  } catch (err) {
    client.close();
    throw err;
  }
}

/** Writes PEM output to --out or stdout. */
export function writePemOutput(out: string | undefined, pem: string): void {
  if (out === undefined) process.stdout.write(pem);
  else writePemFile(out, pem, 0o644);
}
