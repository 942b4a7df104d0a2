import * as fs from 'node:fs';
import * as tls from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { ServerCredentials } from '@grpc/grpc-js';
import type { SecureContextOptions } from 'node:tls';
import type { TlsConfig } from '../config/gateway-config';

export interface LoadedTlsMaterial {
  options: SecureContextOptions;
  /** The server certificate's notAfter, for the expiry metric. */
  notAfter: Date;
}

/**
 * Reads the server certificate, key and client CA, and proves the set works by building a
 * secure context from it: a mismatched pair must be refused here, before grpc-js would start
 * dropping every new connection with it.
 */
export function loadTlsMaterial(config: TlsConfig): LoadedTlsMaterial {
  const read = (field: string, file: string): Buffer => {
    try {
      return fs.readFileSync(file);
    } catch (err) {
      throw new Error(`tls.${field}: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  };
  const cert = read('cert', config.cert);
  const key = read('key', config.key);
  const ca = read('clientCa', config.clientCa);
  const options: SecureContextOptions = { cert, key, ca, minVersion: 'TLSv1.3' };
  try {
    tls.createSecureContext(options);
  } catch (err) {
    throw new Error(`tls: the certificate, key and client CA do not form a usable TLS context: ${(err as Error).message}`);
  }
  let notAfter: Date;
  try {
    notAfter = new Date(new X509Certificate(cert).validTo);
  } catch (err) {
    throw new Error(`tls.cert: ${config.cert} is not a PEM certificate: ${(err as Error).message}`);
  }
  return { options, notAfter };
}

/**
 * grpc-js server credentials for mTLS, TLS 1.3 only, requiring a client certificate from the
 * client CA, and replaceable while the server runs (existing connections keep their context).
 */
export class ReloadableServerCredentials extends ServerCredentials {
  constructor(material: LoadedTlsMaterial, handshakeTimeoutMs: number) {
    super({ requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3', handshakeTimeout: handshakeTimeoutMs }, material.options);
  }

  /** Swaps in new material for new connections. */
  reload(material: LoadedTlsMaterial): void {
    this.updateSecureContextOptions(material.options);
  }

  _equals(other: ServerCredentials): boolean {
    return other === this;
  }
}
