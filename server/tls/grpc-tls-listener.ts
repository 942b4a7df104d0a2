import * as net from 'node:net';
import * as tls from 'node:tls';
import { X509Certificate } from 'node:crypto';
import type { LimitsConfig } from '../config/gateway-config';
import type { ChainProblem, ClientTrust } from './client-trust';
import { HandshakeAdmission, sourceOf, type HandshakeRefusal } from './handshake-admission';
import { PeerConnection } from './peer-connection';
import type { LoadedTlsMaterial } from './tls-material';
import { tlsFailureReason } from './tls-failure-reason';

/** What the listener reports; the gateway turns it into metrics and logs. */
export interface ListenerObserver {
  connectionRefused(reason: HandshakeRefusal | 'max_connections'): void;
  handshakeFailed(reason: string): void;
  connectionClosed(reason: ChainProblem, connection: PeerConnection): void;
}

export type ListenerLimits = Pick<LimitsConfig, 'maxConnections' | 'maxHandshakes' | 'maxHandshakesPerAddress' | 'handshakeTimeoutMs'>;

/** The TLS layer gave up on a stalled handshake but leaves an injected socket open: close it this much later. */
const HANDSHAKE_CLOSE_AFTER_TIMEOUT_MS = 100;

/** `address:port`, as grpc-js's call.getPeer() writes it. */
const peerOf = (socket: net.Socket): string => `${socket.remoteAddress}:${socket.remotePort}`;

interface Handshake {
  socket: net.Socket;
  source: string;
  timer: NodeJS.Timeout;
}

/**
 * The gRPC port: TCP accept with connection and handshake caps, TLS 1.3 with a required client
 * certificate, and the registry of authenticated connections. Each connection whose handshake
 * succeeded is handed to `accept` (the gRPC server's connection injector). Reloading the TLS
 * material re-checks every open connection against the new client CA and CRLs.
 */
export class GrpcTlsListener {
  private readonly server: net.Server;
  private readonly tlsServer: tls.Server;
  private readonly admission: HandshakeAdmission;
  private readonly handshakes = new Map<string, Handshake>();
  private readonly connections = new Map<string, PeerConnection>();
  private trust: ClientTrust;

  constructor(
    material: LoadedTlsMaterial,
    private readonly limits: ListenerLimits,
    private readonly observer: ListenerObserver,
    private readonly accept: (socket: tls.TLSSocket) => void,
  ) {
    this.trust = material.trust;
    this.admission = new HandshakeAdmission(limits.maxHandshakes, limits.maxHandshakesPerAddress);
    this.tlsServer = tls.createServer({
      ...material.options,
      requestCert: true,
      rejectUnauthorized: true,
      ALPNProtocols: ['h2'],
      handshakeTimeout: limits.handshakeTimeoutMs,
    });
    this.tlsServer.on('secureConnection', (socket: tls.TLSSocket) => this.authenticated(socket));
    this.tlsServer.on('tlsClientError', (err: NodeJS.ErrnoException, socket: tls.TLSSocket) => this.observer.handshakeFailed(tlsFailureReason(err, socket)));
    this.server = net.createServer((socket) => this.admit(socket));
    this.server.maxConnections = limits.maxConnections;
    this.server.on('drop', () => this.observer.connectionRefused('max_connections'));
  }

  listen(host: string, port: number): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve((this.server.address() as net.AddressInfo).port);
      });
    });
  }

  /** A TCP connection: counted as a handshake in progress, or refused when a cap is reached. */
  private admit(socket: net.Socket): void {
    socket.on('error', () => undefined); // the TLS layer reports what matters
    const source = sourceOf(socket.remoteAddress);
    const refusal = this.admission.admit(source);
    if (refusal) {
      this.observer.connectionRefused(refusal);
      socket.destroy();
      return;
    }
    const peer = peerOf(socket);
    const handshake: Handshake = {
      socket,
      source,
      timer: setTimeout(() => socket.destroy(), this.limits.handshakeTimeoutMs + HANDSHAKE_CLOSE_AFTER_TIMEOUT_MS),
    };
    this.handshakes.set(peer, handshake);
    socket.once('close', () => this.handshakeOver(peer, handshake));
    this.tlsServer.emit('connection', socket);
  }

  private handshakeOver(peer: string, handshake: Handshake): void {
    if (this.handshakes.get(peer) !== handshake) return;
    this.handshakes.delete(peer);
    clearTimeout(handshake.timer);
    this.admission.release(handshake.source);
  }

  /** The handshake succeeded and the client certificate verified. */
  private authenticated(socket: tls.TLSSocket): void {
    const peer = peerOf(socket);
    const handshake = this.handshakes.get(peer);
    if (handshake) this.handshakeOver(peer, handshake);
    const chain = peerChain(socket);
    if (chain.length === 0) {
      socket.destroy(); // verified, yet no certificate to read: never serve it
      return;
    }
    const connection = new PeerConnection(socket, chain, (c, reason) => this.observer.connectionClosed(reason, c));
    this.connections.set(peer, connection);
    socket.once('close', () => {
      if (this.connections.get(peer) === connection) this.connections.delete(peer);
    });
    this.accept(socket);
  }

  /** The open connection a call arrived on, by its peer address (grpc-js call.getPeer()). */
  connection(peer: string): PeerConnection | undefined {
    return this.connections.get(peer);
  }

  /** New material for new handshakes; open connections whose chain no longer passes are closed. */
  reload(material: LoadedTlsMaterial): void {
    this.tlsServer.setSecureContext(material.options);
    this.trust = material.trust;
    const now = new Date();
    for (const connection of this.connections.values()) {
      const problem = this.trust.check(connection.chain, now);
      if (problem) connection.close(problem);
    }
  }

  get stats(): { handshakes: number; connections: number } {
    return { handshakes: this.admission.count, connections: this.connections.size };
  }

  /** Stops accepting and drops handshakes in progress; open connections are the gRPC server's to drain. */
  close(): void {
    this.server.close();
    for (const handshake of [...this.handshakes.values()]) handshake.socket.destroy();
  }

  /** Destroys whatever is left on the port (after the gRPC server gave up draining). */
  destroyAll(): void {
    for (const connection of this.connections.values()) connection.socket.destroy();
  }
}

/** The verified chain as the handshake built it: the client's certificate, then its issuers. */
function peerChain(socket: tls.TLSSocket): X509Certificate[] {
  const chain: X509Certificate[] = [];
  let cert: tls.DetailedPeerCertificate | undefined = socket.getPeerCertificate(true);
  const seen = new Set<string>();
  while (cert?.raw && !seen.has(cert.fingerprint256)) {
    seen.add(cert.fingerprint256);
    chain.push(new X509Certificate(cert.raw));
    cert = cert.issuerCertificate;
  }
  return chain;
}
