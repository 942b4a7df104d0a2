import { status } from '@grpc/grpc-js';
import { HsmBusyError, HsmDeadlineError, HsmOperationError, HsmRejectedError, HsmUnavailableError } from '../pkcs11/hsm-errors';

/** A failure with the exact gRPC status the caller gets. Messages never contain secrets. */
export class GatewayError extends Error {
  /** `cause`: what failed below, kept for the log; the client sees only the code and message. */
  constructor(readonly code: status, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'GatewayError';
  }
}

const REJECTED_AS_PRECONDITION = new Set(['CKR_MECHANISM_INVALID', 'CKR_MECHANISM_PARAM_INVALID', 'CKR_KEY_FUNCTION_NOT_PERMITTED', 'CKR_KEY_TYPE_INCONSISTENT', 'CKR_KEY_SIZE_RANGE']);

/** Maps any failure of the sign path to a GatewayError. */
export function toGatewayError(err: unknown): GatewayError {
  if (err instanceof GatewayError) return err;
  const cause = { cause: err };
  if (err instanceof HsmUnavailableError) return new GatewayError(status.UNAVAILABLE, err.message, cause);
  if (err instanceof HsmBusyError) return new GatewayError(status.RESOURCE_EXHAUSTED, err.message, cause);
  if (err instanceof HsmDeadlineError) return new GatewayError(status.DEADLINE_EXCEEDED, err.message, cause);
  if (err instanceof HsmRejectedError) {
    return new GatewayError(REJECTED_AS_PRECONDITION.has(err.ckr) ? status.FAILED_PRECONDITION : status.INVALID_ARGUMENT, err.message, cause);
  }
  if (err instanceof HsmOperationError) return new GatewayError(status.INTERNAL, err.message, cause);
  // A bug, not a failure we know: the client learns nothing of it, the log line keeps it.
  return new GatewayError(status.INTERNAL, 'internal error', cause);
}

export const STATUS_NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(status).filter(([, v]) => typeof v === 'number').map(([k, v]) => [v as number, k]),
);
