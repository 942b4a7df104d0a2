// The signers of non-blocking bridges, on the thread that owns the TLS servers. The
// addon queues the signatures of paused handshakes and hands them over once per
// event-loop turn (dispatch); each answer goes straight back to the addon, which
// resumes its handshake on the spot. No thread hop, no per-request timer: the addon
// bounds each request with the bridge's signTimeoutMs.
import type { KeylessAddon } from './keyless-addon';
import type { RemoteSigner } from './remote-signer';

/** A flat batch from the addon: [bridgeId, requestId, keyName, algorithm, digest] repeated. */
export type DispatchBatch = ReadonlyArray<string | number | Buffer>;
const FIELDS = 5;

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

export class MainThreadSigners {
  private readonly signers = new Map<string, RemoteSigner>();

  constructor(private readonly addon: KeylessAddon) {}

  register(bridgeId: string, signer: RemoteSigner): void {
    this.signers.set(bridgeId, signer);
  }

  unregister(bridgeId: string): void {
    this.signers.delete(bridgeId);
  }

  /** Called by the addon with every signature queued since the last turn. */
  readonly dispatch = (batch: DispatchBatch): void => {
    const signers = this.signers;
    // The signer (GatewayClient) coalesces the writes of one synchronous burst.
    for (let i = 0; i + FIELDS <= batch.length; i += FIELDS) {
      const requestId = batch[i + 1] as number;
      const signer = signers.get(batch[i] as string);
      if (signer === undefined) {
        this.fail(requestId, 'the bridge has no signer on this thread (closed)');
        continue;
      }
      try {
        if (signer.signWithCallback !== undefined) {
          signer.signWithCallback(batch[i + 2] as string, batch[i + 3] as number, batch[i + 4] as Buffer, (error, bytes) => {
            if (error !== null) this.fail(requestId, describe(error));
            else this.complete(requestId, bytes);
          });
        } else {
          Promise.resolve(signer.sign(batch[i + 2] as string, batch[i + 3] as number, batch[i + 4] as Buffer))
            .then((bytes) => this.complete(requestId, bytes), (error: unknown) => this.fail(requestId, describe(error)));
        }
      } catch (error) {
        this.fail(requestId, describe(error));
      }
    }
  };

  private complete(requestId: number, signature: unknown): void {
    if (signature instanceof Uint8Array) this.addon.completeSign(requestId, null, signature);
    else this.fail(requestId, 'sign() resolved to something other than a Buffer');
  }

  private fail(requestId: number, message: string): void {
    this.addon.completeSign(requestId, message, null);
  }
}
