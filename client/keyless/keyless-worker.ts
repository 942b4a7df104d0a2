// Entry point of a bridge's signer worker thread. It owns the remote signer and
// answers the sign requests that the addon hands over from the TLS thread.
import { parentPort, workerData } from 'node:worker_threads';

import { loadKeylessAddon, type KeylessAddon } from './keyless-addon';
import { createSigner, type RemoteSigner } from './remote-signer';

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
    signer = await createSigner(data.signerModule, data.signerOptions);
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
