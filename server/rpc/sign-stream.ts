import { status, type ServerDuplexStream } from '@grpc/grpc-js';
import { SignResponse, type SignRequest } from '../../proto/generated/hsmgateway/v1/signer';
import type { LimitsConfig } from '../config/gateway-config';
import { toGatewayError } from './gateway-error';
import type { SignPipeline } from './sign-pipeline';
import { deadlineOf } from './deadline';

/**
 * One SignStream call: each request is signed independently and answered as soon as it is done,
 * so answers may come back out of order (matched by request_id). A failed request gets an
 * answer with error_code/error_message; the stream stays open. The stream ends once the client
 * has half-closed and every answer is written.
 */
export class SignStreamSession {
  private inFlight = 0;
  private clientDone = false;
  private closed = false;

  constructor(
    private readonly call: ServerDuplexStream<SignRequest, SignResponse>,
    private readonly identity: string,
    private readonly pipeline: SignPipeline,
    private readonly limits: LimitsConfig,
  ) {}

  start(): void {
    this.call.on('data', (req: SignRequest) => this.onRequest(req));
    this.call.on('end', () => {
      this.clientDone = true;
      this.maybeEnd();
    });
    this.call.on('cancelled', () => { this.closed = true; });
    this.call.on('error', () => { this.closed = true; });
  }

  private onRequest(req: SignRequest): void {
    if (this.inFlight >= this.limits.maxStreamInFlight) {
      this.write(SignResponse.create({
        requestId: req.requestId,
        errorCode: status.RESOURCE_EXHAUSTED,
        errorMessage: `more than ${this.limits.maxStreamInFlight} requests in flight on this stream; wait for answers`,
      }));
      return;
    }
    this.inFlight++;
    // Each item gets the default request timeout, bounded by the stream's own deadline.
    const deadline = deadlineOf(this.call, this.limits.requestTimeoutMs);
    this.pipeline.sign(req, { identity: this.identity, rpc: 'SignStream', deadline }).then(
      (signature) => this.write(SignResponse.create({ requestId: req.requestId, signature })),
      (err: unknown) => {
        const e = toGatewayError(err);
        this.write(SignResponse.create({ requestId: req.requestId, errorCode: e.code, errorMessage: e.message }));
      },
    ).finally(() => {
      this.inFlight--;
      this.maybeEnd();
    });
  }

  private write(response: SignResponse): void {
    if (this.closed) return;
    this.call.write(response);
  }

  private maybeEnd(): void {
    if (this.clientDone && this.inFlight === 0 && !this.closed) {
      this.closed = true;
      this.call.end();
    }
  }
}
