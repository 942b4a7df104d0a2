/** Verification errors (OpenSSL's names, as Node reports them) that deserve their own label. */
const CERTIFICATE_REASONS: Record<string, string> = {
  CERT_REVOKED: 'certificate_revoked',
  CERT_HAS_EXPIRED: 'certificate_expired',
  CERT_NOT_YET_VALID: 'certificate_not_yet_valid',
};

/**
 * A short, bounded label for a TLS handshake the gateway refused or that failed. A client
 * certificate that fails verification is refused after the handshake (Node verifies in
 * JavaScript and destroys the socket): the socket's authorizationError says why.
 */
export function tlsFailureReason(err: NodeJS.ErrnoException, socket?: { authorizationError?: Error | string | null }): string {
  const certificateError = socket?.authorizationError;
  if (certificateError) return CERTIFICATE_REASONS[String(certificateError)] ?? 'certificate_untrusted';
  if (err.code === 'ERR_TLS_HANDSHAKE_TIMEOUT') return 'handshake_timeout';
  if (/certificate required|peer did not return a certificate/i.test(err.message)) return 'no_client_certificate';
  if (/unsupported protocol|wrong version|version too low/i.test(err.message)) return 'protocol_version';
  if (/http request|wrong version number/i.test(err.message)) return 'not_tls';
  if (err.code === 'ECONNRESET') return 'connection_reset';
  return 'other';
}
