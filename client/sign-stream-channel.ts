import { Metadata, status, type ClientDuplexStream, type ServiceError } from '@grpc/grpc-js';
import type { SignRequest, SignResponse, SignatureAlgorithm, SignerClient } from '../proto/generated/hsmgateway/v1/signer';
import { GatewayClientError } from './gateway-client-error';

interface Pending {
  resolve(signature: Buffer): void;
  reject(err: GatewayClientError): void;
  /** performance.now() after which the request fails with DEADLINE_EXCEEDED. */
  deadline: number;
}

/**
 * Many signatures multiplexed on one SignStream to one endpoint. Answers are matched by
 * request_id and may arrive in any order. When the stream breaks, every request still in
 * flight fails with UNAVAILABLE (the caller's failover re-sends it elsewhere: signing is
 * idempotent) and the next request opens a fresh stream.
 *
 * This is the keyless handshakes' hot path: a request costs a map entry and a write. One timer
 * per channel enforces the deadlines (none per request).
 */
export class SignStreamChannel {
  private call: ClientDuplexStream<SignRequest, SignResponse> | undefined;
  private readonly pending = new Map<bigint, Pending>();
  private nextId = 1n;
  private deadlineTimer: NodeJS.Timeout | undefined;
  /** When deadlineTimer fires (performance.now() clock); Infinity when not armed. */
  private timerAt = Infinity;

  constructor(private readonly client: SignerClient, private readonly endpoint: string) {}

  get inFlight(): number {
    return this.pending.size;
  }

  private open(): ClientDuplexStream<SignRequest, SignResponse> {
    const call = this.client.signStream(new Metadata());
    call.on('data', (res: SignResponse) => this.answer(res));
    const broken = (err: ServiceError | undefined): void => {
      if (this.call !== call) return;
      this.call = undefined;
      // Whatever ended the stream, its requests were not refused one by one: report them as
      // UNAVAILABLE so failover re-sends them.
      const failure = new GatewayClientError(status.UNAVAILABLE, `SignStream to ${this.endpoint} ended: ${err?.details ?? 'stream closed'}`, this.endpoint);
      const failed = [...this.pending.values()];
      this.pending.clear();
      for (const p of failed) p.reject(failure);
    };
    call.on('error', (err: ServiceError) => broken(err));
    call.on('end', () => broken(undefined));
    return call;
  }

  private answer(res: SignResponse): void {
    const p = this.pending.get(res.requestId);
    if (!p) return; // late answer after a local deadline: dropped
    this.pending.delete(res.requestId);
    if (res.errorCode === 0) p.resolve(Buffer.from(res.signature));
    else p.reject(new GatewayClientError(res.errorCode, res.errorMessage, this.endpoint));
  }

  sign(key: string, algorithm: SignatureAlgorithm, input: SignRequest['input'], deadlineMs: number): Promise<Buffer> {
    const call = (this.call ??= this.open());
    const requestId = this.nextId++;
    return new Promise<Buffer>((resolve, reject) => {
      const deadline = performance.now() + deadlineMs;
      this.pending.set(requestId, { resolve, reject, deadline });
      if (deadline < this.timerAt) this.armDeadlines(deadline);
      call.write({ key, algorithm, input, requestId });
    });
  }

  private armDeadlines(at: number): void {
    clearTimeout(this.deadlineTimer);
    this.timerAt = at;
    this.deadlineTimer = setTimeout(this.expire, Math.max(1, Math.ceil(at - performance.now())));
    this.deadlineTimer.unref(); // an open stream keeps the process alive, not a deadline
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
        p.reject(new GatewayClientError(status.DEADLINE_EXCEEDED, 'no answer on SignStream within the deadline', this.endpoint));
      } else if (p.deadline < earliest) {
        earliest = p.deadline;
      }
    }
    if (earliest !== Infinity) this.armDeadlines(earliest);
  };

  /** Ends the stream; requests still in flight fail with CANCELLED (not retried). */
  close(): void {
    const call = this.call;
    this.call = undefined;
    clearTimeout(this.deadlineTimer);
    this.deadlineTimer = undefined;
    this.timerAt = Infinity;
    const failed = [...this.pending.values()];
    this.pending.clear();
    const failure = new GatewayClientError(status.CANCELLED, 'the GatewayClient was closed', this.endpoint);
    for (const p of failed) p.reject(failure);
    call?.end();
  }
}
