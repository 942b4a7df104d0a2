// The SignStream RPC to one gateway endpoint, spoken over node:http2 directly: the hot path of
// every keyless handshake and of GatewayClient.signStreamed().
//
// Why not @grpc/grpc-js here (it serves every other call): measured on the proxy, a SignStream
// item costs about 40 µs more through grpc-js's call stack (interceptors, retry buffer, filter
// promises, one HTTP/2 write per message) than the same bytes written here, where all the
// requests of one turn of the event loop leave in one write. The wire format is plain gRPC
// (length-prefixed protobuf messages, generated codecs, grpc-status trailers), served by the
// gateway's ordinary grpc-js server. BENCHMARKS.md has the figures.
import * as http2 from 'node:http2';
import { status } from '@grpc/grpc-js';
import { SignRequest, SignResponse, type SignatureAlgorithm } from '../proto/generated/hsmgateway/v1/signer';
import { errorMessage } from '../common/errors';
import { GatewayClientError } from './gateway-client-error';

const METHOD_PATH = '/hsmgateway.v1.Signer/SignStream';
const FRAME_HEADER_BYTES = 5; // compressed flag (0) + big-endian length
const PING_TIMEOUT_MS = 10_000;
/** A response bigger than this is not a SignResponse: the stream is dropped. */
const MAX_RESPONSE_BYTES = 1 << 20;

/** How to reach and authenticate to one endpoint (GatewayClient's resolved options). */
export interface SignStreamEndpoint {
  /** host:port */
  address: string;
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
  /** TLS name to verify instead of the host. */
  serverName?: string;
  keepaliveMs: number;
}

/** How a request ends: a signature, or the error (with its gRPC status code). */
export type SignCallback = (error: GatewayClientError | null, signature?: Buffer) => void;

interface Pending {
  done: SignCallback;
  /** performance.now() after which the request fails with DEADLINE_EXCEEDED. */
  deadline: number;
}

/**
 * Many signatures multiplexed on one SignStream to one endpoint. Answers are matched by
 * request_id and may arrive in any order. When the stream or its connection breaks, every
 * request still in flight fails with UNAVAILABLE (the caller's failover re-sends it elsewhere:
 * signing is idempotent) and the next request opens a fresh stream (and, if needed, connection).
 * A request costs a map entry and its share of one write (submit() needs no promise); one timer
 * per channel enforces the deadlines (none per request).
 */
export class SignStreamChannel {
  private session: http2.ClientHttp2Session | undefined;
  private stream: http2.ClientHttp2Stream | undefined;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  /** Framed requests of this turn, written together. */
  private outbox: Buffer[] = [];
  private flushQueued = false;
  /** Bytes of a response frame not complete yet. */
  private partial: Buffer | undefined;
  private deadlineTimer: NodeJS.Timeout | undefined;
  /** When deadlineTimer fires (performance.now() clock); Infinity when not armed. */
  private timerAt = Infinity;
  private keepalive: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(private readonly endpoint: SignStreamEndpoint) {}

  sign(key: string, algorithm: SignatureAlgorithm, input: SignRequest['input'], deadlineMs: number): Promise<Buffer> {
    return new Promise<Buffer>((resolve, reject) => {
      this.submit(key, algorithm, input, deadlineMs, (error, signature) => (error !== null ? reject(error) : resolve(signature as Buffer)));
    });
  }

  /** sign() without a promise: `done` is called once, never synchronously. */
  submit(key: string, algorithm: SignatureAlgorithm, input: SignRequest['input'], deadlineMs: number, done: SignCallback): void {
    if (this.closed) {
      process.nextTick(done, new GatewayClientError(status.CANCELLED, 'the GatewayClient was closed', this.endpoint.address));
      return;
    }
    const requestId = this.nextId++;
    const message = SignRequest.encode({ key, algorithm, input, requestId: BigInt(requestId) }).finish();
    const frame = Buffer.allocUnsafe(FRAME_HEADER_BYTES + message.length);
    frame[0] = 0;
    frame.writeUInt32BE(message.length, 1);
    frame.set(message, FRAME_HEADER_BYTES);
    const deadline = performance.now() + deadlineMs;
    if (this.pending.size === 0) this.session?.ref();
    this.pending.set(requestId, { done, deadline });
    if (deadline < this.timerAt) this.armDeadlines(deadline);
    this.outbox.push(frame);
    if (!this.flushQueued) {
      this.flushQueued = true;
      process.nextTick(this.flush);
    }
  }

  /** Writes this turn's requests in one go, opening the stream first if needed. */
  private readonly flush = (): void => {
    this.flushQueued = false;
    const frames = this.outbox;
    this.outbox = [];
    if (frames.length === 0 || this.closed) return;
    let stream: http2.ClientHttp2Stream;
    try {
      stream = this.stream ?? this.open();
    } catch (error) {
      this.failAll(status.UNAVAILABLE, `cannot open a SignStream to ${this.endpoint.address}: ${errorMessage(error)}`);
      return;
    }
    stream.write(frames.length === 1 ? frames[0] : Buffer.concat(frames));
  };

  private connect(): http2.ClientHttp2Session {
    const { address, ca, cert, key, serverName, keepaliveMs } = this.endpoint;
    const session = http2.connect(`https://${address}`, {
      ca, cert, key,
      ...(serverName !== undefined ? { servername: serverName } : {}),
      settings: { enablePush: false },
    });
    session.on('error', () => undefined); // reported through the stream's close
    const forget = (): void => {
      if (this.session !== session) return;
      this.session = undefined;
      clearInterval(this.keepalive);
      this.keepalive = undefined;
    };
    session.on('close', forget);
    session.on('goaway', forget);
    if (this.pending.size === 0) session.unref();
    this.keepalive = setInterval(() => this.ping(session), keepaliveMs);
    this.keepalive.unref();
    return session;
  }

  /** A keepalive ping; a connection that does not answer within PING_TIMEOUT_MS is dropped. */
  private ping(session: http2.ClientHttp2Session): void {
    if (session.destroyed) return;
    const timer = setTimeout(() => session.destroy(new Error('keepalive ping timed out')), PING_TIMEOUT_MS);
    timer.unref();
    session.ping((error) => {
      clearTimeout(timer);
      if (error !== null) session.destroy(error);
    });
  }

  private open(): http2.ClientHttp2Stream {
    if (this.session === undefined || this.session.closed || this.session.destroyed) this.session = this.connect();
    const stream = this.session.request({
      ':method': 'POST',
      ':path': METHOD_PATH,
      ':authority': this.endpoint.serverName ?? this.endpoint.address,
      'content-type': 'application/grpc+proto',
      te: 'trailers',
      'user-agent': 'hsm-gateway-client',
    });
    this.stream = stream;
    this.partial = undefined;
    let grpcStatus: string | undefined;
    let grpcMessage = '';
    const why = (): string => (grpcStatus !== undefined && grpcStatus !== '0' ? `${status[Number(grpcStatus)] ?? grpcStatus}: ${grpcMessage}` : stream.rstCode ? `reset (HTTP/2 code ${stream.rstCode})` : 'stream closed');
    const readTrailers = (headers: http2.IncomingHttpHeaders): void => {
      const code = headers['grpc-status'];
      if (typeof code === 'string') grpcStatus = code;
      const message = headers['grpc-message'];
      if (typeof message === 'string') grpcMessage = decodeURIComponent(message);
      // The final status (a gateway draining for shutdown sends it while our side is still open):
      // nothing sent on this stream will be answered any more, so retire it now. Requests in
      // flight fail over at once instead of waiting for their deadline on a stream nobody reads.
      if (grpcStatus !== undefined) this.retire(stream, why());
    };
    stream.on('response', readTrailers); // a trailers-only answer carries grpc-status here
    stream.on('trailers', readTrailers);
    stream.on('data', (chunk: Buffer) => this.receive(stream, chunk));
    stream.on('error', () => undefined); // the close below reports it
    stream.on('close', () => this.retire(stream, why()));
    return stream;
  }

  /** The stream is over: the next request opens another; its requests still in flight fail with UNAVAILABLE. */
  private retire(stream: http2.ClientHttp2Stream, why: string): void {
    if (this.stream !== stream) return;
    this.stream = undefined;
    this.partial = undefined;
    this.outbox = [];
    this.failAll(status.UNAVAILABLE, `SignStream to ${this.endpoint.address} ended: ${why}`);
    if (!stream.closed) stream.close();
  }

  /** Splits the response bytes into gRPC messages and settles their requests. */
  private receive(stream: http2.ClientHttp2Stream, chunk: Buffer): void {
    let data = this.partial === undefined ? chunk : Buffer.concat([this.partial, chunk]);
    this.partial = undefined;
    while (data.length >= FRAME_HEADER_BYTES) {
      const length = data.readUInt32BE(1);
      if (data[0] !== 0 || length > MAX_RESPONSE_BYTES) {
        stream.close(http2.constants.NGHTTP2_PROTOCOL_ERROR);
        return;
      }
      if (data.length < FRAME_HEADER_BYTES + length) break;
      let response: SignResponse;
      try {
        response = SignResponse.decode(data.subarray(FRAME_HEADER_BYTES, FRAME_HEADER_BYTES + length));
      } catch {
        stream.close(http2.constants.NGHTTP2_PROTOCOL_ERROR);
        return;
      }
      data = data.subarray(FRAME_HEADER_BYTES + length);
      this.answer(response);
    }
    if (data.length > 0) this.partial = data;
  }

  private answer(res: SignResponse): void {
    const id = Number(res.requestId);
    const p = this.pending.get(id);
    if (p === undefined) return; // late answer after a local deadline: dropped
    this.pending.delete(id);
    if (this.pending.size === 0) this.session?.unref();
    if (res.errorCode === 0) p.done(null, Buffer.from(res.signature));
    else p.done(new GatewayClientError(res.errorCode, res.errorMessage, this.endpoint.address));
  }

  private failAll(code: status, details: string): void {
    const failed = [...this.pending.values()];
    this.pending.clear();
    this.session?.unref();
    const failure = new GatewayClientError(code, details, this.endpoint.address);
    for (const p of failed) p.done(failure);
  }

  private armDeadlines(at: number): void {
    clearTimeout(this.deadlineTimer);
    this.timerAt = at;
    this.deadlineTimer = setTimeout(this.expire, Math.max(1, Math.ceil(at - performance.now())));
    this.deadlineTimer.unref(); // a request in flight keeps the process alive, not its deadline
  }

  /** Fails the requests past their deadline and re-arms for the earliest one left. */
  private readonly expire = (): void => {
    this.deadlineTimer = undefined;
    this.timerAt = Infinity;
    const now = performance.now();
    let earliest = Infinity;
    for (const [id, p] of this.pending) {
      if (p.deadline <= now) {
        this.pending.delete(id);
        p.done(new GatewayClientError(status.DEADLINE_EXCEEDED, 'no answer on SignStream within the deadline', this.endpoint.address));
      } else if (p.deadline < earliest) {
        earliest = p.deadline;
      }
    }
    if (this.pending.size === 0) this.session?.unref();
    if (earliest !== Infinity) this.armDeadlines(earliest);
  };

  /** Ends the stream and the connection; requests still in flight fail with CANCELLED (not retried). */
  close(): void {
    this.closed = true;
    clearTimeout(this.deadlineTimer);
    this.deadlineTimer = undefined;
    this.timerAt = Infinity;
    clearInterval(this.keepalive);
    this.keepalive = undefined;
    this.outbox = [];
    this.failAll(status.CANCELLED, 'the GatewayClient was closed');
    const stream = this.stream;
    const session = this.session;
    this.stream = undefined;
    this.session = undefined;
    stream?.end();
    session?.close();
  }
}
