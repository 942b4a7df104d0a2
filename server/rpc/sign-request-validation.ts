import { createHash } from 'node:crypto';
import { status } from '@grpc/grpc-js';
import type { SignRequest } from '../../proto/generated/hsmgateway/v1/signer';
import type { AlgorithmSpec } from '../../common/algorithms';
import type { ResolvedKey } from '../pkcs11/key-store';
import { GatewayError } from './gateway-error';
import { isKeyName, KEY_NAME_RULE } from '../../common/names';


/** A key name that cannot name a configured key is malformed input, whoever asks. */
export function checkKeyName(name: string): void {
  if (name.length === 0) throw new GatewayError(status.INVALID_ARGUMENT, 'key is required');
  if (!isKeyName(name)) throw new GatewayError(status.INVALID_ARGUMENT, `key name must be ${KEY_NAME_RULE}`);
}

export function checkAlgorithmFitsKey(spec: AlgorithmSpec | undefined, algorithm: number, key: ResolvedKey): AlgorithmSpec {
  if (!spec) {
    throw new GatewayError(status.INVALID_ARGUMENT, algorithm === 0 ? 'algorithm is required' : `unknown algorithm ${algorithm}`);
  }
  if (!key.algorithms.includes(spec.algorithm)) {
    throw new GatewayError(status.INVALID_ARGUMENT, `algorithm ${spec.name} does not fit key "${key.name}" (${key.curve || `RSA-${key.bits}`}); use one of ${key.algorithms.length} algorithms listed by GetKey`);
  }
  return spec;
}

/** The bytes the HSM signs: the digest as given, or the gateway's hash of the message (EdDSA: the message). */
export function signInput(req: SignRequest, spec: AlgorithmSpec, maxMessageBytes: number): Buffer {
  const input = req.input;
  if (!input) throw new GatewayError(status.INVALID_ARGUMENT, 'digest or message is required');
  if (input.$case === 'digest') {
    if (!spec.hash) throw new GatewayError(status.INVALID_ARGUMENT, `${spec.name} signs the message itself: send message, not digest`);
    if (input.value.length !== spec.digestLength) {
      throw new GatewayError(status.INVALID_ARGUMENT, `digest must be ${spec.digestLength} bytes for ${spec.name} (got ${input.value.length})`);
    }
    return input.value;
  }
  if (input.value.length > maxMessageBytes) {
    throw new GatewayError(status.INVALID_ARGUMENT, `message is ${input.value.length} bytes; the limit is ${maxMessageBytes} (send a digest instead)`);
  }
  if (!spec.hash) {
    // PKCS#11 modules refuse zero-length data (pkcs11js passes no buffer): say so instead of INTERNAL.
    if (input.value.length === 0) throw new GatewayError(status.INVALID_ARGUMENT, `message is empty; ${spec.name} signs the message itself and needs at least one byte`);
    return input.value;
  }
  return createHash(spec.hash).update(input.value).digest();
}

/**
 * The audit line's digest_fp: the first 8 bytes of the digest signed. EdDSA signs the message
 * itself, so for it the first 8 bytes of the message's SHA-256: message bytes never reach the log.
 */
export function inputFingerprint(data: Buffer, spec: AlgorithmSpec): string {
  const digest = spec.hash ? data : createHash('sha256').update(data).digest();
  return digest.subarray(0, 8).toString('hex');
}
