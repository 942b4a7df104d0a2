import { status, type ServiceError } from '@grpc/grpc-js';

const NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(status).filter(([, v]) => typeof v === 'number').map(([k, v]) => [v as number, k]),
);

/** A failed gateway call, with the gRPC status code the gateway (or the transport) reported. */
export class GatewayClientError extends Error {
  /** e.g. 'PERMISSION_DENIED'. */
  readonly codeName: string;

  constructor(readonly code: status, readonly details: string, readonly endpoint?: string) {
    super(`${NAMES[code] ?? code}: ${details}`);
    this.name = 'GatewayClientError';
    this.codeName = NAMES[code] ?? String(code);
  }

  static from(err: ServiceError | Error, endpoint?: string): GatewayClientError {
    if (err instanceof GatewayClientError) return err;
    const se = err as Partial<ServiceError>;
    if (typeof se.code === 'number') return new GatewayClientError(se.code, se.details ?? err.message, endpoint);
    return new GatewayClientError(status.UNKNOWN, err.message, endpoint);
  }
}
