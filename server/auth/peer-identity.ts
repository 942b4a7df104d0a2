import { X509Certificate } from 'node:crypto';

/**
 * The caller's identity from its verified client certificate: the first SAN URI (a SPIFFE ID),
 * else the first SAN DNS name, else the subject CN.
 */
export function identityFromCertificate(der: Buffer): string | undefined {
  const cert = new X509Certificate(der);
  const sans = parseSubjectAltName(cert.subjectAltName ?? '');
  const uri = sans.find((s) => s.type === 'URI');
  if (uri) return uri.value;
  const dns = sans.find((s) => s.type === 'DNS');
  if (dns) return dns.value;
  const cn = /(?:^|\n)CN=([^\n]+)/.exec(cert.subject);
  return cn?.[1];
}

/** Node's subjectAltName string: `DNS:a, URI:spiffe://x, IP Address:1.2.3.4`, values JSON-quoted when they contain separators. */
export function parseSubjectAltName(text: string): Array<{ type: string; value: string }> {
  const out: Array<{ type: string; value: string }> = [];
  let i = 0;
  while (i < text.length) {
    const colon = text.indexOf(':', i);
    if (colon === -1) break;
    const type = text.slice(i, colon).trim();
    let value: string;
    let next: number;
    if (text[colon + 1] === '"') {
      let j = colon + 2;
      while (j < text.length && text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      value = JSON.parse(text.slice(colon + 1, j + 1)) as string;
      next = text.indexOf(',', j + 1);
    } else {
      next = text.indexOf(', ', colon + 1);
      value = text.slice(colon + 1, next === -1 ? undefined : next);
    }
    out.push({ type, value });
    if (next === -1) break;
    i = next + (text[next + 1] === ' ' ? 2 : 1);
  }
  return out;
}

/** Caches identities by certificate fingerprint: certificates repeat for every call on a connection. */
export class IdentityCache {
  private readonly byFingerprint = new Map<string, string | undefined>();

  constructor(private readonly maxEntries = 10_000) {}

  identity(fingerprint256: string, raw: Buffer): string | undefined {
    if (this.byFingerprint.has(fingerprint256)) return this.byFingerprint.get(fingerprint256);
    if (this.byFingerprint.size >= this.maxEntries) this.byFingerprint.clear();
    const id = identityFromCertificate(raw);
    this.byFingerprint.set(fingerprint256, id);
    return id;
  }
}
