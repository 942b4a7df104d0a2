import { status, type ServerDuplexStream, type ServerUnaryCall } from '@grpc/grpc-js';
import type { IdentityCache } from '../auth/peer-identity';
import { GatewayError } from './gateway-error';

type AnyCall = ServerUnaryCall<unknown, unknown> | ServerDuplexStream<unknown, unknown>;

/**
 * The caller's identity from its verified client certificate. The TLS layer already refused
 * connections without a certificate from the client CA; this guards against any path that
 * would reach a handler without one.
 */
export function callerIdentity(call: AnyCall, cache: IdentityCache): string {
  const peer = call.getAuthContext().sslPeerCertificate;
  const raw = peer?.raw;
  if (!peer || !raw) throw new GatewayError(status.UNAUTHENTICATED, 'a client certificate from the configured CA is required');
  const identity = cache.identity(peer.fingerprint256, raw);
  if (!identity) throw new GatewayError(status.UNAUTHENTICATED, 'the client certificate carries no SAN URI, SAN DNS name or CN');
  return identity;
}
