// The keyless agent protocol, version 1 (docs/KEYLESS-AGENT.md), the agent's side. The
// provider's side is client/keyless/native/src/standalone/agent_protocol.{h,cc}: the two
// implement the same frames and are tested against each other.
//
//   frame     u32 body length | body                        (big-endian integers)
//   request   u8 version=1 | u8 type=1 | u32 request id | u8 algorithm
//             | u16 key name length | key name | u32 input length | input
//   answer    u8 version=1 | u8 type=2 | u32 request id | u32 length | signature
//   error     u8 version=1 | u8 type=3 | u32 request id | u8 gRPC code | u16 length | message

export const PROTOCOL_VERSION = 1;
export const TYPE_SIGN = 1;
export const TYPE_SIGNATURE = 2;
export const TYPE_ERROR = 3;
/** A body larger than this is a protocol error: the connection is closed. */
export const MAX_BODY_BYTES = 70 * 1024;
const MAX_KEY_NAME_BYTES = 128;
const MAX_ERROR_MESSAGE_BYTES = 1024;

export interface SignRequestFrame {
  requestId: number;
  algorithm: number;
  keyName: string;
  input: Buffer;
}

/** A frame that cannot be a version 1 sign request: the connection it came on is closed. */
export class ProtocolError extends Error {}

/** Splits a connection's bytes into request bodies; keeps a partial frame for the next chunk. */
export class FrameReader {
  private pending: Buffer | undefined;

  /** The complete requests in `chunk` (and the bytes before it); throws ProtocolError on garbage. */
  push(chunk: Buffer): SignRequestFrame[] {
    let data = this.pending === undefined ? chunk : Buffer.concat([this.pending, chunk]);
    this.pending = undefined;
    const out: SignRequestFrame[] = [];
    while (data.length >= 4) {
      const length = data.readUInt32BE(0);
      if (length > MAX_BODY_BYTES) throw new ProtocolError(`frame of ${length} bytes (the limit is ${MAX_BODY_BYTES})`);
      if (data.length < 4 + length) break;
      out.push(decodeSignRequest(data.subarray(4, 4 + length)));
      data = data.subarray(4 + length);
    }
    if (data.length > 0) this.pending = Buffer.from(data);
    return out;
  }
}

export function decodeSignRequest(body: Buffer): SignRequestFrame {
  if (body.length < 13) throw new ProtocolError('truncated request');
  if (body[0] !== PROTOCOL_VERSION) throw new ProtocolError(`protocol version ${body[0]} (this agent speaks ${PROTOCOL_VERSION})`);
  if (body[1] !== TYPE_SIGN) throw new ProtocolError(`unknown request type ${body[1]}`);
  const requestId = body.readUInt32BE(2);
  const algorithm = body[6];
  const nameLength = body.readUInt16BE(7);
  if (nameLength === 0 || nameLength > MAX_KEY_NAME_BYTES || body.length < 9 + nameLength + 4) throw new ProtocolError('bad key name length');
  const keyName = body.toString('utf8', 9, 9 + nameLength);
  const inputLength = body.readUInt32BE(9 + nameLength);
  if (body.length !== 13 + nameLength + inputLength) throw new ProtocolError('bad input length');
  return { requestId, algorithm, keyName, input: body.subarray(13 + nameLength) };
}

export function encodeSignature(requestId: number, signature: Buffer): Buffer {
  const frame = Buffer.allocUnsafe(14 + signature.length);
  frame.writeUInt32BE(10 + signature.length, 0);
  frame[4] = PROTOCOL_VERSION;
  frame[5] = TYPE_SIGNATURE;
  frame.writeUInt32BE(requestId, 6);
  frame.writeUInt32BE(signature.length, 10);
  signature.copy(frame, 14);
  return frame;
}

export function encodeError(requestId: number, code: number, message: string): Buffer {
  let text = Buffer.from(message, 'utf8');
  if (text.length > MAX_ERROR_MESSAGE_BYTES) text = text.subarray(0, MAX_ERROR_MESSAGE_BYTES);
  const frame = Buffer.allocUnsafe(13 + text.length);
  frame.writeUInt32BE(9 + text.length, 0);
  frame[4] = PROTOCOL_VERSION;
  frame[5] = TYPE_ERROR;
  frame.writeUInt32BE(requestId, 6);
  frame[10] = code & 0xff;
  frame.writeUInt16BE(text.length, 11);
  text.copy(frame, 13);
  return frame;
}
