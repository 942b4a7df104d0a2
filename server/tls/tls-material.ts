import * as fs from 'node:fs';
import * as tls from 'node:tls';
import { X509Certificate } from 'node:crypto';
import type { SecureContextOptions } from 'node:tls';
import type { TlsConfig } from '../config/gateway-config';
import { ClientTrust } from './client-trust';
import { errorMessage } from '../../common/errors';

export interface LoadedTlsMaterial {
  /** For the TLS server: the certificate and key, the client CA and the CRLs (TLS 1.3 only). */
  options: SecureContextOptions;
  /** The server certificate's notAfter, for the expiry metric. */
  notAfter: Date;
  /** The client CA and CRLs as parsed by the gateway, to re-check open connections. */
  trust: ClientTrust;
}

/**
 * Reads the server certificate, key, client CA and optional CRLs, and proves the set works by
 * building a secure context from it: a mismatched pair or an unreadable CRL must be refused
 * here, before the listener would start dropping every new connection with it.
 */
export function loadTlsMaterial(config: TlsConfig): LoadedTlsMaterial {
  const read = (field: string, file: string): Buffer => {
    try {
      return fs.readFileSync(file);
    } catch (err) {
      throw new Error(`tls.${field}: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? errorMessage(err)}`);
    }
  };
  const cert = read('cert', config.cert);
  const key = read('key', config.key);
  const ca = read('clientCa', config.clientCa);
  const crl = config.crl !== undefined ? read('crl', config.crl) : undefined;
  const options: SecureContextOptions = { cert, key, ca, ...(crl ? { crl } : {}), minVersion: 'TLSv1.3' };
  try {
    tls.createSecureContext(options);
  } catch (err) {
    throw new Error(`tls: the certificate, key, client CA${crl ? ' and CRL' : ''} do not form a usable TLS context: ${errorMessage(err)}`);
  }
  let notAfter: Date;
  try {
    notAfter = new Date(new X509Certificate(cert).validTo);
  } catch (err) {
    throw new Error(`tls.cert: ${config.cert} is not a PEM certificate: ${errorMessage(err)}`);
  }
  let trust: ClientTrust;
  try {
    trust = new ClientTrust(ca.toString('latin1'), crl?.toString('latin1'));
  } catch (err) {
    throw new Error(`tls: the client CA or CRL file cannot be parsed: ${errorMessage(err)}`);
  }
  return { options, notAfter, trust };
}
