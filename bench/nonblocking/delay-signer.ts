// The bench's RemoteSigner: waits the injected latency, then signs RSA-PSS over the
// digest in the signer worker (EMSA-PSS encoding, RFC 8017 9.1.1, plus a raw RSA
// private operation). It stands in for the gateway round trip: the worker thread is
// part of the proxy process, so its CPU counts in the proxy's CPU per handshake, much
// as a local key's signature counts for the stock server.
import { createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

import type { RemoteSigner } from '../../client/keyless/remote-signer';
import { pssSign } from '../../test/keyless/support/pss-signer';

export interface DelaySignerOptions {
  keyFile: string;
  latencyMs: number;
}

export function createRemoteSigner(options: unknown): RemoteSigner {
  const { keyFile, latencyMs } = options as DelaySignerOptions;
  const key = createPrivateKey(readFileSync(keyFile));
  return {
    async sign(_keyName: string, algorithm: number, digest: Buffer): Promise<Buffer> {
      if (latencyMs > 0) await sleep(latencyMs);
      return pssSign(key, algorithm, digest);
    },
  };
}
