import { SignRequest, SignerService } from '../../proto/generated/hsmgateway/v1/signer';
import { errorMessage } from '../../common/errors';

/**
 * A SignRequest that could not be decoded. grpc-js answers a deserializer exception with
 * INTERNAL and, on a stream, ends the whole call; decoding into this marker instead lets the
 * handler answer INVALID_ARGUMENT for that one message.
 */
export interface MalformedSignRequest extends SignRequest {
  malformed: string;
}

export function isMalformed(req: SignRequest): req is MalformedSignRequest {
  return typeof (req as Partial<MalformedSignRequest>).malformed === 'string';
}

function decodeSignRequest(value: Buffer): SignRequest {
  try {
    return SignRequest.decode(value);
  } catch (err) {
    const marker: MalformedSignRequest = { ...SignRequest.create(), malformed: errorMessage(err) };
    return marker;
  }
}

/** The generated Signer service definition with tolerant SignRequest decoding. */
export const TolerantSignerService = {
  ...SignerService,
  sign: { ...SignerService.sign, requestDeserialize: decodeSignRequest },
  signStream: { ...SignerService.signStream, requestDeserialize: decodeSignRequest },
} as const;
