import { status, type ServerDuplexStream, type ServerUnaryCall, type ServerWritableStream } from '@grpc/grpc-js';
import type { ServerHttp2Session } from 'node:http2';
import type { PeerIdentity } from '../auth/peer-identity';
import type { ChainProblem } from '../tls/client-trust';
import type { PeerConnection } from '../tls/peer-connection';
import { GatewayError } from './gateway-error';

type AnyCall = ServerUnaryCall<unknown, unknown> | ServerDuplexStream<unknown, unknown> | ServerWritableStream<unknown, unknown>;

/** A connection whose client certificate carries an identity. */
export type AuthenticatedConnection = PeerConnection & { readonly identity: PeerIdentity };

export interface ConnectionLookup {
  /** The open connection with this peer address (`address:port`, as call.getPeer() gives it). */
  connection(peer: string): PeerConnection | undefined;
}

/**
 * The HTTP/2 session (one per TLS connection) a call arrived on, reached through grpc-js
 * internals (call → ServerInterceptingCall → … → Http2ServerStream.session). Undefined if those
 * moved: the caller then looks the connection up by peer address on every call.
 */
function http2SessionOf(call: AnyCall): ServerHttp2Session | undefined {
  let node: unknown = (call as unknown as { call?: unknown }).call;
  for (let depth = 0; depth < 6 && node !== null && typeof node === 'object'; depth++) {
    const session = (node as { stream?: { session?: unknown } }).stream?.session;
    if (session !== null && typeof session === 'object') return session as ServerHttp2Session;
    node = (node as { nextCall?: unknown }).nextCall;
  }
  return undefined;
}

/** Connections by HTTP/2 session: found once per connection, not per call. */
const connectionBySession = new WeakMap<object, PeerConnection>();

const REFUSALS: Record<ChainProblem, string> = {
  certificate_expired: 'the client certificate has expired; reconnect with a renewed certificate',
  certificate_revoked: 'the client certificate has been revoked',
  certificate_untrusted: 'the client certificate is no longer trusted by the configured client CA',
};

/** UNAUTHENTICATED when the connection's certificate expired or was revoked (the connection is being closed). */
export function checkStillAuthenticated(connection: PeerConnection): void {
  const refusal = connection.refusal();
  if (refusal) throw new GatewayError(status.UNAUTHENTICATED, REFUSALS[refusal]);
}

/**
 * The connection a call arrived on, with the identity of its verified client certificate. The
 * TLS layer already refused connections without a certificate from the client CA; this refuses
 * calls on a connection whose certificate has since expired or been revoked, and guards against
 * any path that would reach a handler without one.
 */
export function callerConnection(call: AnyCall, connections: ConnectionLookup): AuthenticatedConnection {
  const session = http2SessionOf(call);
  let connection = session ? connectionBySession.get(session) : undefined;
  if (!connection) {
    connection = connections.connection(call.getPeer());
    if (!connection) throw new GatewayError(status.UNAUTHENTICATED, 'a client certificate from the configured CA is required');
    if (session) {
      connectionBySession.set(session, connection);
      connection.attachSession(session);
    }
  }
  checkStillAuthenticated(connection);
  if (!connection.identity) throw new GatewayError(status.UNAUTHENTICATED, 'the client certificate carries no SAN URI, SAN DNS name or CN');
  return connection as AuthenticatedConnection;
}
