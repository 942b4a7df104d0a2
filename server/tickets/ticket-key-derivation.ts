/**
 * How an epoch's session-ticket key is derived from the HSM's root secret. The HSM computes
 *
 *   secret = HMAC-SHA256(root, "hsmgw-ticket-v1" 0x00 scope 0x00 uint32be(epochSeconds) uint64be(epoch))
 *
 * and this module expands it (HKDF-Expand, RFC 5869) into the key name, HMAC key and AES key.
 * Any gateway on the same token computes the same bytes, so replicas need no coordination. The
 * epoch length is part of the input: gateways configured with different epoch lengths never serve
 * one key for two different time windows.
 */
import { createHmac } from 'node:crypto';

const DERIVATION_LABEL = 'hsmgw-ticket-v1';
const EXPAND_INFO = Buffer.from('hsmgw-ticket-v1 name|hmac|aes');

export const TICKET_KEY_NAME_BYTES = 16;
export const TICKET_HMAC_KEY_BYTES = 32;
export const TICKET_AES_KEY_BYTES = 32;

export interface TicketKeyMaterial {
  name: Buffer;
  hmacKey: Buffer;
  aesKey: Buffer;
}

/** The message the HSM MACs with the root secret for one scope and epoch. */
export function derivationInput(scope: string, epochSeconds: number, epoch: number): Buffer {
  const lengths = Buffer.alloc(12);
  lengths.writeUInt32BE(epochSeconds, 0);
  lengths.writeBigUInt64BE(BigInt(epoch), 4);
  return Buffer.concat([Buffer.from(DERIVATION_LABEL), Buffer.from([0]), Buffer.from(scope, 'utf8'), Buffer.from([0]), lengths]);
}

/** HKDF-Expand with SHA-256 (RFC 5869 section 2.3): `prk` is already a pseudorandom key. */
export function hkdfExpandSha256(prk: Buffer, info: Buffer, length: number): Buffer {
  if (length > 255 * 32) throw new RangeError('HKDF-Expand: length too large');
  const blocks: Buffer[] = [];
  let previous = Buffer.alloc(0);
  for (let i = 1; blocks.length * 32 < length; i++) {
    previous = createHmac('sha256', prk).update(previous).update(info).update(Buffer.from([i])).digest();
    blocks.push(previous);
  }
  return Buffer.concat(blocks).subarray(0, length);
}

/** The key name, HMAC key and AES key of one epoch, from the HSM's MAC of derivationInput(). */
export function expandTicketKey(secret: Buffer): TicketKeyMaterial {
  const okm = hkdfExpandSha256(secret, EXPAND_INFO, TICKET_KEY_NAME_BYTES + TICKET_HMAC_KEY_BYTES + TICKET_AES_KEY_BYTES);
  return {
    name: okm.subarray(0, TICKET_KEY_NAME_BYTES),
    hmacKey: okm.subarray(TICKET_KEY_NAME_BYTES, TICKET_KEY_NAME_BYTES + TICKET_HMAC_KEY_BYTES),
    aesKey: okm.subarray(TICKET_KEY_NAME_BYTES + TICKET_HMAC_KEY_BYTES),
  };
}
