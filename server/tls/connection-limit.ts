import type { Server as NetServer } from 'node:net';
import type * as grpc from '@grpc/grpc-js';

/**
 * Caps TCP connections on every port the gRPC server listens on. grpc-js exposes no option for
 * this, so it reaches the http2 servers it keeps in a private map (tested: a 6th connection to a
 * gateway limited to 5 is dropped). Returns false, and changes nothing, if that internal moved.
 */
export function applyConnectionLimit(server: grpc.Server, maxConnections: number): boolean {
  const servers = http2ServersOf(server);
  for (const http2Server of servers) http2Server.maxConnections = maxConnections;
  return servers.length > 0;
}

function http2ServersOf(server: grpc.Server): NetServer[] {
  const internals = server as unknown as { http2Servers?: Map<NetServer, unknown> };
  return internals.http2Servers instanceof Map ? [...internals.http2Servers.keys()] : [];
}

/**
 * Reports TLS handshakes the gateway refused (bad or missing client certificate, wrong protocol
 * version, stalled handshake), by a short reason, through the same internal map.
 */
export function onTlsClientError(server: grpc.Server, report: (reason: string) => void): void {
  for (const http2Server of http2ServersOf(server)) {
    http2Server.on('tlsClientError', (err: NodeJS.ErrnoException) => report(tlsFailureReason(err)));
  }
}

export function tlsFailureReason(err: NodeJS.ErrnoException): string {
  if (err.code === 'ERR_TLS_HANDSHAKE_TIMEOUT') return 'handshake_timeout';
  if (/certificate required|peer did not return a certificate/i.test(err.message)) return 'no_client_certificate';
  if (/unsupported protocol|wrong version|version too low/i.test(err.message)) return 'protocol_version';
  if (/http request|wrong version number/i.test(err.message)) return 'not_tls';
  if (err.code === 'ECONNRESET') return 'connection_reset';
  return 'other';
}
