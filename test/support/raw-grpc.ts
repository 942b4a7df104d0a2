/**
 * gRPC by hand over node:http2, for attacks a grpc-js client will not make (never reading its
 * answers, choosing the source address) and for watching a connection's GOAWAY and close.
 */
import * as fs from 'node:fs';
import * as http2 from 'node:http2';
import * as tls from 'node:tls';
import type { ClientIdentity } from './test-environment';

export const SIGN_PATH = '/hsmgateway.v1.Signer/Sign';
export const SIGN_STREAM_PATH = '/hsmgateway.v1.Signer/SignStream';

export interface RawConnectOptions {
  port: number;
  ca: string;
  identity: ClientIdentity;
  /** Source address, e.g. 127.0.0.2 (any 127/8 address works on Linux loopback). */
  localAddress?: string;
}

/** An HTTP/2 session over mTLS to the gateway; resolves once the TLS handshake is done. */
export function connectRaw(options: RawConnectOptions): Promise<http2.ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`https://localhost:${options.port}`, {
      createConnection: () => tls.connect({
        host: '127.0.0.1', port: options.port, servername: 'localhost', ALPNProtocols: ['h2'],
        ca: fs.readFileSync(options.ca), cert: fs.readFileSync(options.identity.cert), key: fs.readFileSync(options.identity.key),
        ...(options.localAddress ? { localAddress: options.localAddress } : {}),
      }),
    });
    session.once('connect', () => resolve(session));
    session.once('error', reject);
    session.once('close', () => reject(new Error('closed before the HTTP/2 session was up')));
  });
}

/** One length-prefixed gRPC message (uncompressed). */
export function grpcFrame(message: Uint8Array): Buffer {
  const frame = Buffer.alloc(5 + message.length);
  frame.writeUInt32BE(message.length, 1);
  frame.set(message, 5);
  return frame;
}

/** The gRPC messages in a response body. */
export function grpcMessages(body: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0; at + 5 <= body.length;) {
    const length = body.readUInt32BE(at + 1);
    out.push(body.subarray(at + 5, at + 5 + length));
    at += 5 + length;
  }
  return out;
}

export function grpcRequest(session: http2.ClientHttp2Session, path: string): http2.ClientHttp2Stream {
  return session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers' });
}

export interface RawAnswer {
  /** grpc-status (from trailers, or from a trailers-only answer). */
  code: number;
  details: string;
  messages: Buffer[];
}

/** One unary call: the request message in, the status and messages out. */
export function rawUnary(session: http2.ClientHttp2Session, path: string, message: Uint8Array, timeoutMs = 5000): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const stream = grpcRequest(session, path);
    const chunks: Buffer[] = [];
    let headers: http2.IncomingHttpHeaders = {};
    const timer = setTimeout(() => { stream.close(); reject(new Error(`no answer within ${timeoutMs} ms`)); }, timeoutMs);
    stream.on('response', (h) => { headers = h; });
    stream.on('trailers', (t) => { headers = { ...headers, ...t }; });
    stream.on('data', (d: Buffer) => chunks.push(d));
    stream.on('error', (err) => { clearTimeout(timer); reject(err); });
    stream.on('close', () => {
      clearTimeout(timer);
      if (headers['grpc-status'] === undefined) {
        reject(new Error(`stream closed without a gRPC status (RST code ${stream.rstCode})`));
        return;
      }
      resolve({ code: Number(headers['grpc-status']), details: decodeURIComponent(String(headers['grpc-message'] ?? '')), messages: grpcMessages(Buffer.concat(chunks)) });
    });
    stream.end(grpcFrame(message));
  });
}

/** A SignStream opened by hand: write requests, read answers one by one. */
export class RawSignStream {
  readonly stream: http2.ClientHttp2Stream;
  private pending = Buffer.alloc(0);
  private readonly answers: Buffer[] = [];
  private waiter: ((answer: Buffer | undefined) => void) | undefined;
  private ended = false;

  constructor(session: http2.ClientHttp2Session) {
    this.stream = grpcRequest(session, SIGN_STREAM_PATH);
    this.stream.on('data', (d: Buffer) => {
      this.pending = Buffer.concat([this.pending, d]);
      while (this.pending.length >= 5 && this.pending.length >= 5 + this.pending.readUInt32BE(1)) {
        const length = this.pending.readUInt32BE(1);
        this.deliver(this.pending.subarray(5, 5 + length));
        this.pending = this.pending.subarray(5 + length);
      }
    });
    this.stream.on('error', () => undefined);
    this.stream.on('close', () => {
      this.ended = true;
      this.waiter?.(undefined);
    });
  }

  private deliver(answer: Buffer): void {
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = undefined;
      w(answer);
    } else {
      this.answers.push(answer);
    }
  }

  send(message: Uint8Array): void {
    this.stream.write(grpcFrame(message));
  }

  /** The next answer's bytes, or undefined once the stream has closed. */
  next(timeoutMs = 5000): Promise<Buffer | undefined> {
    const ready = this.answers.shift();
    if (ready || this.ended) return Promise.resolve(ready);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { this.waiter = undefined; reject(new Error(`no SignStream answer within ${timeoutMs} ms`)); }, timeoutMs);
      this.waiter = (answer) => { clearTimeout(timer); resolve(answer); };
    });
  }
}

/** When a session got its GOAWAY and when it closed (performance.now()), once they happen. */
export class SessionWatch {
  goawayAt: number | undefined;
  closedAt: number | undefined;
  readonly closed: Promise<void>;

  constructor(session: http2.ClientHttp2Session) {
    session.on('goaway', () => { this.goawayAt ??= performance.now(); });
    session.on('error', () => undefined);
    this.closed = new Promise((resolve) => session.once('close', () => { this.closedAt = performance.now(); resolve(); }));
  }
}
