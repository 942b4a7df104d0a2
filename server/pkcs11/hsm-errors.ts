/** Failures of the HSM layer, each mapped to one gRPC status by the rpc layer. */

/** The HSM or token cannot be used right now (down, reconnecting, session creation failing). */
export class HsmUnavailableError extends Error {
  constructor(message: string, readonly ckr?: string) {
    super(message);
    this.name = 'HsmUnavailableError';
  }
}

/** No session became free in time, or too many requests are already waiting for one. */
export class HsmBusyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'HsmBusyError';
  }
}

/** The request's deadline passed before the HSM was asked. */
export class HsmDeadlineError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'HsmDeadlineError';
  }
}

/** The token refused this particular request (e.g. CKR_DATA_LEN_RANGE). */
export class HsmRejectedError extends Error {
  constructor(message: string, readonly ckr: string) {
    super(message);
    this.name = 'HsmRejectedError';
  }
}

/** Any other PKCS#11 failure. */
export class HsmOperationError extends Error {
  constructor(message: string, readonly ckr?: string) {
    super(message);
    this.name = 'HsmOperationError';
  }
}
