// A fast in-process RemoteSigner for load and abuse tests: RSA-PSS over the digest
// (EMSA-PSS encoded here, RFC 8017 9.1.1, then a raw RSA private operation), after an
// optional delay. One RSA key; algorithms 4-6 only (TLS 1.3 with an RSA certificate).
// Behaviours per key name: "<name>" signs, "hang" never answers, "throw" throws from sign()
// itself, "exit" ends the worker (blocking path; on the main thread it throws too).
import { createHash, createPrivateKey, privateEncrypt, randomBytes, constants, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { isMainThread } from 'node:worker_threads';

import type { RemoteSigner } from '../../../client/keyless/remote-signer';

export interface PssSignerOptions {
  keyFile: string;
  delayMs?: number;
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

export function pssSign(key: KeyObject, algorithm: number, digest: Buffer): Buffer {
  const hash = HASHES[algorithm];
  if (hash === undefined) throw new Error(`pss signer: unsupported algorithm ${algorithm}`);
  const modBits = key.asymmetricKeyDetails?.modulusLength ?? 2048;
  const emLen = Math.ceil((modBits - 1) / 8);
  const salt = randomBytes(digest.length);
  const h = createHash(hash).update(Buffer.alloc(8)).update(digest).update(salt).digest();
  const db = Buffer.concat([Buffer.alloc(emLen - salt.length - h.length - 2), Buffer.from([1]), salt]);
  const mask = mgf1(hash, h, db.length);
  for (let i = 0; i < db.length; i++) db[i] = (db[i] ?? 0) ^ (mask[i] ?? 0);
  db[0] = (db[0] ?? 0) & (0xff >> (8 * emLen - (modBits - 1)));
  const em = Buffer.concat([db, h, Buffer.from([0xbc])]);
  return privateEncrypt({ key, padding: constants.RSA_NO_PADDING }, modBits % 8 === 1 ? Buffer.concat([Buffer.alloc(1), em]) : em);
}

export function createRemoteSigner(options: unknown): RemoteSigner {
  const { keyFile, delayMs = 0 } = options as PssSignerOptions;
  const key = createPrivateKey(readFileSync(keyFile));
  const signLater = async (algorithm: number, digest: Buffer): Promise<Buffer> => {
    if (delayMs > 0) await sleep(delayMs);
    return pssSign(key, algorithm, digest);
  };
  return {
    sign(keyName: string, algorithm: number, digest: Buffer): Promise<Buffer> {
      if (keyName === 'hang') return new Promise<Buffer>(() => undefined);
      if (keyName === 'throw' || (keyName === 'exit' && isMainThread)) throw new Error(`pss signer: ${keyName} on purpose`);
      if (keyName === 'exit') process.exit(3);
      return signLater(algorithm, digest);
    },
  };
}
