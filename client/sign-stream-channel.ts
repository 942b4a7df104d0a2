import { Metadata, status, type ClientDuplexStream, type ServiceError } from '@grpc/grpc-js';
import type { SignRequest, SignResponse, SignerClient } from '../proto/generated/hsmgateway/v1/signer';
import { GatewayClientError } from './gateway-client-error';

interface Pending {
  resolve(signature: Buffer): void;
  reject(err: GatewayClientError): void;
  timer: NodeJS.Timeout;
}

/**
 * Many signatures multiplexed on one SignStream to one endpoint. Answers are matched by
 * request_id and may arrive in any order. When the stream breaks, every request still in
 * flight fails with UNAVAILABLE (the caller's failover re-sends it elsewhere: signing is
 * idempotent) and the next request opens a fresh stream.
 */
export class SignStreamChannel {
  private call: ClientDuplexStream<SignRequest, SignResponse> | undefined;
  private readonly pending = new Map<bigint, Pending>();
  private nextId = 1n;

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
      for (const [id, p] of this.pending) {
        clearTimeout(p.timer);
        this.pending.delete(id);
        p.reject(failure);
      }
    };
    call.on('error', (err: ServiceError) => broken(err));
    call.on('end', () => broken(undefined));
    return call;
  }

  private answer(res: SignResponse): void {
    const p = this.pending.get(res.requestId);
    if (!p) return; // late answer after a local deadline: dropped
    this.pending.delete(res.requestId);
    clearTimeout(p.timer);
    if (res.errorCode === 0) p.resolve(Buffer.from(res.signature));
    else p.reject(new GatewayClientError(res.errorCode, res.errorMessage, this.endpoint));
  }

  sign(request: Omit<SignRequest, 'requestId'>, deadline: Date): Promise<Buffer> {
    this.call ??= this.open();
    const requestId = this.nextId++;
    return new Promise<Buffer>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(requestId);
        reject(new GatewayClientError(status.DEADLINE_EXCEEDED, `no answer on SignStream within the deadline`, this.endpoint));
      }, Math.max(0, deadline.getTime() - Date.now()));
      this.pending.set(requestId, { resolve, reject, timer });
      this.call?.write({ ...request, requestId });
    });
  }

  close(): void {
    const call = this.call;
    this.call = undefined;
    call?.end();
  }
}
