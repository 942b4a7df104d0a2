import { X509Certificate } from 'node:crypto';

/** Where an identity was read from in the client certificate. */
export type IdentityType = 'uri' | 'dns' | 'cn';

/**
 * The caller's identity, typed by where it came from: a rule written as a URI matches only a
 * URI SAN, a DNS rule only a DNS SAN, and a CN only a rule that asks for it (`cn:NAME`).
 */
export interface PeerIdentity {
  readonly type: IdentityType;
  readonly value: string;
  /** How logs, metrics and error messages show it: URIs and DNS names as they are, a CN as `cn:NAME`. */
  readonly label: string;
  /** Distinct for every type and value: the key of per-identity caches and rate-limit buckets. */
  readonly key: string;
}

export function peerIdentity(type: IdentityType, value: string): PeerIdentity {
  return { type, value, label: type === 'cn' ? `cn:${value}` : value, key: `${type}\u0000${value}` };
}

/**
 * The identity a verified client certificate carries: its first SAN URI (a SPIFFE ID), else its
 * first SAN DNS name, else its subject CN.
 */
export function identityFromCertificate(cert: X509Certificate): PeerIdentity | undefined {
  const sans = parseSubjectAltName(cert.subjectAltName ?? '');
  const uri = sans.find((s) => s.type === 'URI');
  if (uri) return peerIdentity('uri', uri.value);
  const dns = sans.find((s) => s.type === 'DNS');
  if (dns) return peerIdentity('dns', dns.value);
  const cn = /(?:^|\n)CN=([^\n]+)/.exec(cert.subject);
  return cn ? peerIdentity('cn', cn[1]) : undefined;
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
