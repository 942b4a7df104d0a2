// The bench's RemoteSigner: waits the injected latency, then signs RSA-PSS over the
// digest in the signer worker (EMSA-PSS encoding, RFC 8017 9.1.1, plus a raw RSA
// private operation). It stands in for the gateway round trip: the worker thread is
// part of the proxy process, so its CPU counts in the proxy's CPU per handshake, much
// as a local key's signature counts for the stock server.
import { constants, createHash, createPrivateKey, privateEncrypt, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

import type { RemoteSigner } from '../../client/keyless/remote-signer';

export interface DelaySignerOptions {
  keyFile: string;
  latencyMs: number;
}

const HASHES: Record<number, string> = { 4: 'sha256', 5: 'sha384', 6: 'sha512' };

function mgf1(hash: string, seed: Buffer, length: number): Buffer {
  const blocks: Buffer[] = [];
  for (let counter = 0; blocks.length * seed.length < length; counter++) {
    const c = Buffer.alloc(4);
    c.writeUInt32BE(counter);
    blocks.push(createHash(hash).update(seed).update(c).digest());
  }
  return Buffer.concat(blocks).subarray(0, length);
}

export function createRemoteSigner(options: unknown): RemoteSigner {
  const { keyFile, latencyMs } = options as DelaySignerOptions;
  const key = createPrivateKey(readFileSync(keyFile));
  const modBits = key.asymmetricKeyDetails?.modulusLength ?? 2048;
  const emLen = Math.ceil((modBits - 1) / 8);
  return {
    async sign(_keyName: string, algorithm: number, digest: Buffer): Promise<Buffer> {
      const hash = HASHES[algorithm];
      if (hash === undefined) throw new Error(`bench signer: algorithm ${algorithm} unsupported (RSA-PSS only)`);
      if (latencyMs > 0) await sleep(latencyMs);
      const salt = randomBytes(digest.length);
      const h = createHash(hash).update(Buffer.alloc(8)).update(digest).update(salt).digest();
      const db = Buffer.concat([Buffer.alloc(emLen - salt.length - h.length - 2), Buffer.from([1]), salt]);
      const mask = mgf1(hash, h, db.length);
      for (let i = 0; i < db.length; i++) db[i] = (db[i] ?? 0) ^ (mask[i] ?? 0);
      db[0] = (db[0] ?? 0) & (0xff >> (8 * emLen - (modBits - 1)));
      return privateEncrypt({ key, padding: constants.RSA_NO_PADDING }, Buffer.concat([db, h, Buffer.from([0xbc])]));
    },
  };
}
