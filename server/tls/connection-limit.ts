import type { Server as NetServer } from 'node:net';
import type * as grpc from '@grpc/grpc-js';

/**
 * Caps TCP connections on every port the gRPC server listens on. grpc-js exposes no option for
 * this, so it reaches the http2 servers it keeps in a private map (tested: a 6th connection to a
 * gateway limited to 5 is dropped). Returns false, and changes nothing, if that internal moved.
 */
export function applyConnectionLimit(server: grpc.Server, maxConnections: number): boolean {
  const internals = server as unknown as { http2Servers?: Map<NetServer, unknown> };
  if (!(internals.http2Servers instanceof Map) || internals.http2Servers.size === 0) return false;
  for (const http2Server of internals.http2Servers.keys()) http2Server.maxConnections = maxConnections;
  return true;
}
