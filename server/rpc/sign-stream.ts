import { status, type ServerDuplexStream } from '@grpc/grpc-js';
import { SignResponse, type SignRequest } from '../../proto/generated/hsmgateway/v1/signer';
import type { LimitsConfig } from '../config/gateway-config';
import type { AuthenticatedConnection } from './caller-connection';
import { GatewayError } from './gateway-error';
import type { SignPipeline, SignReply, SignRequestTask } from './sign-pipeline';
import { deadlineOf } from './deadline';

/**
 * One SignStream call: each request is signed independently and answered as soon as it is done,
 * so answers may come back out of order (matched by request_id). A failed request gets an
 * answer with error_code/error_message; the stream stays open. The stream ends once the client
 * has half-closed and every answer is written.
 *
 * Memory is bounded even when the client never reads its answers: an item holds its in-flight
 * slot until its answer is written, and every item received owes an answer (signature or
 * refusal) until it is written. With twice maxStreamInFlight answers owed, the stream stops
 * reading, so HTTP/2 flow control pushes back on the client.
 */
export class SignStreamSession implements SignReply {
  /** Items being signed, or signed and not written yet: at most maxStreamInFlight. */
  private inFlight = 0;
  /** Items received whose answer is not written yet. */
  private owed = 0;
  private readingPaused = false;
  private clientDone = false;
  private closed = false;
  private draining = false;
  /** Called once when the call is over, however it ended. */
  onClosed: () => void = () => undefined;

  constructor(
    private readonly call: ServerDuplexStream<SignRequest, SignResponse>,
    private readonly connection: AuthenticatedConnection,
    private readonly pipeline: SignPipeline,
    private readonly limits: LimitsConfig,
  ) {}

  start(): void {
    this.call.on('data', (req: SignRequest) => this.onRequest(req));
    this.call.on('end', () => {
      this.clientDone = true;
      this.maybeEnd();
    });
    this.call.on('cancelled', () => this.markClosed());
    this.call.on('error', () => this.markClosed());
  }

  private markClosed(): void {
    if (this.closed) return;
    this.closed = true;
    this.onClosed();
  }

  /** Shutdown: answer what is in flight, refuse new items with UNAVAILABLE, then end the stream. */
  drain(): void {
    this.draining = true;
    this.maybeEnd();
  }

  private onRequest(req: SignRequest): void {
    this.owe();
    if (this.draining) {
      this.refuse(req, status.UNAVAILABLE, 'gateway shutting down; retry on another endpoint');
      return;
    }
    if (this.inFlight >= this.limits.maxStreamInFlight) {
      this.refuse(req, status.RESOURCE_EXHAUSTED, `more than ${this.limits.maxStreamInFlight} requests in flight on this stream; wait for answers`);
      return;
    }
    this.inFlight++;
    // Each item gets the default request timeout, bounded by the stream's own deadline.
    const deadline = deadlineOf(this.call, this.limits.requestTimeoutMs);
    this.pipeline.sign(req, { connection: this.connection, rpc: 'SignStream', deadline }, this);
  }

  /** SignReply: the item's answer, signature or error. */
  answer(task: SignRequestTask): void {
    const requestId = task.request.requestId;
    const failure = task.failure;
    const response = failure
      ? SignResponse.create({ requestId, errorCode: failure.code, errorMessage: failure.message })
      : SignResponse.create({ requestId, signature: task.signature });
    this.respond(response, true);
  }

  private refuse(req: SignRequest, code: status, message: string): void {
    this.respond(SignResponse.create({ requestId: req.requestId, errorCode: code, errorMessage: message }), false);
  }

  /** An item received owes an answer until it is written; too many owed stop reading. */
  private owe(): void {
    this.owed++;
    if (this.readingPaused || this.owed < 2 * this.limits.maxStreamInFlight) return;
    this.readingPaused = true;
    this.call.pause();
  }

  /** Hands an answer to the call; `holdsSlot` answers free their item's in-flight slot once written. */
  private respond(response: SignResponse, holdsSlot: boolean): void {
    if (this.closed) {
      if (holdsSlot) this.inFlight--;
      return;
    }
    this.call.write(response, () => this.written(holdsSlot));
  }

  private written(holdsSlot: boolean): void {
    if (holdsSlot) this.inFlight--;
    this.owed--;
    if (this.readingPaused && this.owed <= this.limits.maxStreamInFlight) {
      this.readingPaused = false;
      this.call.resume();
    }
    this.maybeEnd();
  }

  private maybeEnd(): void {
    if ((this.clientDone || this.draining) && this.inFlight === 0 && !this.closed) {
      this.markClosed();
      this.call.end();
    }
  }
}

/**
 * The open SignStreams, so that shutdown can drain them, counted per connection: a connection
 * gets at most limits.maxSignStreamsPerConnection, so what one connection can make the gateway
 * hold is bounded too (each stream's own bound times that).
 */
export class SignStreamRegistry {
  private readonly sessions = new Set<SignStreamSession>();
  private readonly perConnection = new WeakMap<AuthenticatedConnection, number>();
  private draining = false;

  constructor(private readonly limits: LimitsConfig) {}

  /** Serves a SignStream call, or refuses it with RESOURCE_EXHAUSTED when its connection has as many as allowed. */
  open(call: ServerDuplexStream<SignRequest, SignResponse>, connection: AuthenticatedConnection, pipeline: SignPipeline): void {
    const open = this.perConnection.get(connection) ?? 0;
    if (open >= this.limits.maxSignStreamsPerConnection) {
      throw new GatewayError(status.RESOURCE_EXHAUSTED, `${open} SignStreams already open on this connection (limit ${this.limits.maxSignStreamsPerConnection}); multiplex requests on one stream`);
    }
    this.perConnection.set(connection, open + 1);
    const session = new SignStreamSession(call, connection, pipeline, this.limits);
    this.sessions.add(session);
    session.onClosed = () => {
      this.sessions.delete(session);
      this.perConnection.set(connection, (this.perConnection.get(connection) ?? 1) - 1);
    };
    session.start();
    if (this.draining) session.drain();
  }

  drainAll(): void {
    this.draining = true;
    for (const s of this.sessions) s.drain();
  }
}
