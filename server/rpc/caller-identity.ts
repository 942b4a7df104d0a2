import { status, type ServerDuplexStream, type ServerUnaryCall } from '@grpc/grpc-js';
import type { IdentityCache } from '../auth/peer-identity';
import { GatewayError } from './gateway-error';

type AnyCall = ServerUnaryCall<unknown, unknown> | ServerDuplexStream<unknown, unknown>;

/**
 * The HTTP/2 session (one per TLS connection) a call arrived on, reached through grpc-js
 * internals (call → ServerInterceptingCall → … → Http2ServerStream.session). Undefined if those
 * moved: the caller then falls back to the public getAuthContext() on every call.
 */
function http2SessionOf(call: AnyCall): object | undefined {
  let node: unknown = (call as unknown as { call?: unknown }).call;
  for (let depth = 0; depth < 6 && node !== null && typeof node === 'object'; depth++) {
    const session = (node as { stream?: { session?: unknown } }).stream?.session;
    if (session !== null && typeof session === 'object') return session;
    node = (node as { nextCall?: unknown }).nextCall;
  }
  return undefined;
}

/**
 * Identities by TLS connection. getAuthContext() rebuilds the peer certificate object on every
 * call (6% of the gateway's CPU under load); a connection's certificate cannot change (TLS 1.3
 * has no renegotiation), so it is read once per connection.
 */
const identityBySession = new WeakMap<object, string>();

/**
 * The caller's identity from its verified client certificate. The TLS layer already refused
 * connections without a certificate from the client CA; this guards against any path that
 * would reach a handler without one.
 */
export function callerIdentity(call: AnyCall, cache: IdentityCache): string {
  const session = http2SessionOf(call);
  const known = session ? identityBySession.get(session) : undefined;
  if (known !== undefined) return known;
  const peer = call.getAuthContext().sslPeerCertificate;
  const raw = peer?.raw;
  if (!peer || !raw) throw new GatewayError(status.UNAUTHENTICATED, 'a client certificate from the configured CA is required');
  const identity = cache.identity(peer.fingerprint256, raw);
  if (!identity) throw new GatewayError(status.UNAUTHENTICATED, 'the client certificate carries no SAN URI, SAN DNS name or CN');
  if (session) identityBySession.set(session, identity);
  return identity;
}
