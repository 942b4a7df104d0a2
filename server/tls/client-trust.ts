import { X509Certificate } from 'node:crypto';
import * as x509 from '../../common/x509/x509-library';

/** Why an open connection's client certificate chain is no longer accepted. */
export type ChainProblem = 'certificate_expired' | 'certificate_revoked' | 'certificate_untrusted';

/** Longest chain followed from a client certificate to a trust anchor. */
const MAX_DEPTH = 8;

/** Every PEM block with this label in a file (a CA bundle, a file of CRLs). */
export function pemBlocks(text: string, label: string): string[] {
  return text.match(new RegExp(`-----BEGIN ${label}-----[^-]+-----END ${label}-----`, 'g')) ?? [];
}

/**
 * The client CA and revocation lists as the gateway's own code reads them, to re-check
 * connections that are already open when they change (OpenSSL checks new handshakes).
 */
export class ClientTrust {
  private readonly anchors: X509Certificate[];
  private readonly crls: x509.X509Crl[];

  constructor(caPem: string, crlPem = '') {
    this.anchors = pemBlocks(caPem, 'CERTIFICATE').map((pem) => new X509Certificate(pem));
    this.crls = pemBlocks(crlPem, 'X509 CRL').map((pem) => new x509.X509Crl(pem));
  }

  /** The earliest nextUpdate of the CRLs: after it OpenSSL refuses every new handshake. */
  get crlNextUpdate(): Date | undefined {
    const times = this.crls.map((c) => c.nextUpdate?.getTime()).filter((t): t is number => t !== undefined);
    return times.length ? new Date(Math.min(...times)) : undefined;
  }

  /**
   * Checks a verified peer's chain (leaf first, then what it presented and what the handshake
   * found) again: each certificate in its validity period and not revoked, each signed by the
   * next, up to a certificate of the client CA file.
   */
  check(chain: readonly X509Certificate[], now: Date): ChainProblem | undefined {
    let current: X509Certificate | undefined = chain[0];
    for (let depth = 0; current && depth < MAX_DEPTH; depth++) {
      if (now < new Date(current.validFrom) || now > new Date(current.validTo)) return 'certificate_expired';
      if (this.revoked(current)) return 'certificate_revoked';
      const cert: X509Certificate = current;
      const signedBy = (issuer: X509Certificate): boolean => cert.checkIssued(issuer) && cert.verify(issuer.publicKey);
      if (this.anchors.some(signedBy)) return undefined;
      current = chain.find((c) => c !== cert && signedBy(c));
    }
    return 'certificate_untrusted';
  }

  private revoked(cert: X509Certificate): boolean {
    if (this.crls.length === 0) return false;
    const issuer = new x509.X509Certificate(cert.raw).issuer;
    return this.crls.some((crl) => crl.issuer === issuer && crl.findRevoked(cert.serialNumber) !== null);
  }
}
