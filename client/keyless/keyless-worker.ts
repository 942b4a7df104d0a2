// Entry point of a bridge's signer worker thread. It owns the remote signer and
// answers the sign requests that the addon hands over from the TLS thread.
import { parentPort, workerData } from 'node:worker_threads';
import { pathToFileURL } from 'node:url';

import { loadKeylessAddon, type KeylessAddon } from './keyless-addon';
import type { RemoteSigner } from './remote-signer';

export interface KeylessWorkerData {
  bridgeId: string;
  signerModule: string;
  signerOptions: unknown;
}

export type WorkerToBridgeMessage = { type: 'ready' } | { type: 'failed'; message: string };
export type BridgeToWorkerMessage = { type: 'close' };

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function isRemoteSigner(value: unknown): value is RemoteSigner {
  return typeof value === 'object' && value !== null && typeof (value as { sign?: unknown }).sign === 'function';
}

async function createSigner(data: KeylessWorkerData): Promise<RemoteSigner> {
  const loaded: unknown = await import(pathToFileURL(data.signerModule).href);
  // CommonJS modules imported from here expose their exports (also) as `default`.
  const candidates = [loaded, (loaded as { default?: unknown }).default];
  for (const candidate of candidates) {
    const create = (candidate as { createRemoteSigner?: unknown } | undefined)?.createRemoteSigner;
    if (typeof create === 'function') {
      const signer: unknown = await (create as (options: unknown) => unknown)(data.signerOptions);
      if (!isRemoteSigner(signer)) throw new Error(`createRemoteSigner() in ${data.signerModule} did not return an object with sign()`);
      return signer;
    }
  }
  throw new Error(`${data.signerModule} does not export createRemoteSigner(options)`);
}

function serve(addon: KeylessAddon, signer: RemoteSigner, bridgeId: string): void {
  addon.attachWorker(bridgeId, (requestId, keyName, algorithm, digest) => {
    let signature: Promise<Buffer>;
    try {
      signature = Promise.resolve(signer.sign(keyName, algorithm, digest));
    } catch (error) {
      signature = Promise.reject(error);
    }
    signature.then(
      (bytes) => {
        if (bytes instanceof Uint8Array) addon.completeSign(requestId, null, bytes);
        else addon.completeSign(requestId, 'sign() resolved to something other than a Buffer', null);
      },
      (error: unknown) => addon.completeSign(requestId, describe(error), null),
    );
  });
}

async function main(port: NonNullable<typeof parentPort>): Promise<void> {
  const data = workerData as KeylessWorkerData;
  let signer: RemoteSigner;
  const addon = loadKeylessAddon();
  try {
    signer = await createSigner(data);
    serve(addon, signer, data.bridgeId);
  } catch (error) {
    const message: WorkerToBridgeMessage = { type: 'failed', message: describe(error) };
    port.postMessage(message);
    port.close();
    return;
  }
  port.on('message', (message: BridgeToWorkerMessage) => {
    if (message.type !== 'close') return;
    addon.detachWorker();
    Promise.resolve()
      .then(() => signer.close?.())
      .catch(() => undefined)
      .finally(() => process.exit(0));
  });
  const ready: WorkerToBridgeMessage = { type: 'ready' };
  port.postMessage(ready);
}

if (parentPort !== null) void main(parentPort);
