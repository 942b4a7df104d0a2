import { constants as http2, type ServerHttp2Session } from 'node:http2';
import type { X509Certificate } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import { identityFromCertificate, type PeerIdentity } from '../auth/peer-identity';
import type { ChainProblem } from './client-trust';

/** Calls already running when a connection loses its certificate get this long before it is cut. */
const CLOSE_GRACE_MS = 1000;

/**
 * One authenticated TLS connection: who is on it (its verified client certificate chain and the
 * identity that chain carries) and whether calls may still use it.
 */
export class PeerConnection {
  readonly identity: PeerIdentity | undefined;
  readonly notAfterMs: number;
  private session: ServerHttp2Session | undefined;
  private closedFor: ChainProblem | undefined;

  constructor(
    readonly socket: TLSSocket,
    /** Leaf first. */
    readonly chain: readonly X509Certificate[],
    private readonly onClosing: (connection: PeerConnection, reason: ChainProblem) => void,
  ) {
    this.identity = identityFromCertificate(chain[0]);
    this.notAfterMs = Date.parse(chain[0].validTo);
  }

  /** Undefined while calls may use the connection; otherwise why not (an expired certificate closes it). */
  refusal(now = Date.now()): ChainProblem | undefined {
    if (this.closedFor === undefined && now > this.notAfterMs) this.close('certificate_expired');
    return this.closedFor;
  }

  /** The HTTP/2 session on this connection, once a call has shown it: closing sends it a GOAWAY. */
  attachSession(session: ServerHttp2Session): void {
    this.session ??= session;
  }

  /** GOAWAY (or a TLS close when no call has shown the session), then the socket is cut after a short grace. */
  close(reason: ChainProblem): void {
    if (this.closedFor !== undefined) return;
    this.closedFor = reason;
    this.onClosing(this, reason);
    const session = this.session;
    if (session && !session.closed && !session.destroyed) {
      session.goaway(http2.NGHTTP2_NO_ERROR);
      session.close();
    } else {
      this.socket.end();
    }
    setTimeout(() => this.socket.destroy(), CLOSE_GRACE_MS).unref();
  }
}
