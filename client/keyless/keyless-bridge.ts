// KeylessBridge: TLS with a certificate whose private key lives elsewhere.
//
// Keys the bridge names (keyPem) load through the stock `key:` option of tls/https.
// When OpenSSL needs the handshake signature:
//  - non-blocking mode (the default where the self-check passes): the server
//    handshake pauses, the addon hands the digest to the bridge's signer on this
//    thread at the next event-loop turn, and the answer resumes the handshake;
//  - blocking path (mode 'blocking', client connections, guarded connections): the
//    addon hands the digest to the bridge's worker thread and the TLS thread waits
//    (at most signTimeoutMs) for the answer.
// Resumed sessions need no signature. TLS 1.2 static-RSA cipher suites cannot work (no
// decryption) and fail with a readable error. On Node <= 22, do not read
// `asymmetricKeyDetails` of a KeyObject made from a keyless PEM (Node asserts on provider-only
// EC keys). Applications reach all this through GatewayClient (client/index.ts).
import { randomUUID } from 'node:crypto';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';

import { loadKeylessAddon, type KeylessAddon } from './keyless-addon';
import { encodeKeylessKeyPem } from './keyless-key-pem';
import { DrainOnlyMetrics, KeylessMetrics, type KeylessMetricsSink } from './keyless-metrics';
import { optionalPromClient, promClientMissing } from '../optional-prom-client';
import { validateKeylessBridgeOptions, type KeylessBridgeOptions, type KeylessMode, type ValidatedBridgeOptions } from './keyless-options';
import { MainThreadSigners } from './main-thread-signers';
import { TlsHooks } from './nonblocking-hooks';
import { nonBlockingSelfCheck } from './nonblocking-self-check';
import { createSigner, type RemoteSigner } from './remote-signer';
import type { BridgeToWorkerMessage, KeylessWorkerData, WorkerToBridgeMessage } from './keyless-worker';

export type { KeylessBridgeOptions, KeylessMode } from './keyless-options';
export type { CreateRemoteSigner, RemoteSigner } from './remote-signer';

const WORKER_SCRIPT = path.join(__dirname, 'keyless-worker.js');
const RESTART_MIN_MS = 100;
const RESTART_MAX_MS = 5000;
const CLOSE_GRACE_MS = 5000;

let processMetrics: KeylessMetricsSink | undefined;
let processHooks: TlsHooks | undefined;
let processSigners: MainThreadSigners | undefined;
let selfCheck: Promise<string | undefined> | undefined;

function signersFor(addon: KeylessAddon): MainThreadSigners {
  processSigners ??= new MainThreadSigners(addon);
  return processSigners;
}

function hooksFor(addon: KeylessAddon): TlsHooks {
  processHooks ??= new TlsHooks(addon, signersFor(addon));
  return processHooks;
}

function metricsFor(addon: KeylessAddon): KeylessMetricsSink {
  if (processMetrics !== undefined) return processMetrics;
  const prom = optionalPromClient();
  processMetrics = prom === undefined
    ? new DrainOnlyMetrics(() => addon.drainSamples(), () => promClientMissing('keylessMetricsRegistry()'))
    : new KeylessMetrics(prom, () => addon.drainSamples(), {
      stats: () => addon.nonBlockingStats(),
      refusals: () => hooksFor(addon).refusals,
    });
  return processMetrics;
}

/**
 * Runs the non-blocking self-check once per process: undefined when the mode is usable,
 * otherwise why not (the hooks are removed again and one warning line is written).
 */
function nonBlockingUnavailable(addon: KeylessAddon): Promise<string | undefined> {
  selfCheck ??= (async () => {
    const hooks = hooksFor(addon);
    const failure = await nonBlockingSelfCheck(addon, hooks);
    if (failure !== undefined) {
      hooks.uninstall();
      console.warn(`hsm-gateway keyless: non-blocking mode unavailable, using the blocking bridge: ${failure}`);
    }
    return failure;
  })();
  return selfCheck;
}

/** Whether a bridge of `mode` gets the non-blocking mode; throws if 'non-blocking' cannot have it. */
async function nonBlockingFor(addon: KeylessAddon, mode: KeylessMode): Promise<boolean> {
  if (mode === 'blocking') return false;
  const failure = await nonBlockingUnavailable(addon);
  if (failure === undefined) return true;
  if (mode === 'non-blocking') throw new Error(`keyless: mode 'non-blocking' is unavailable in this process: ${failure}`);
  return false;
}

export class KeylessBridge {
  /** Names this bridge inside its key PEMs. */
  readonly id = randomUUID();
  /** Per-process keyless metrics (shared by every bridge), with a mountable prom-client Registry. */
  readonly metrics: KeylessMetricsSink;

  private worker: Worker | undefined;
  private workerStartedAt = 0;
  private closing: Promise<void> | undefined;
  private restartDelayMs = RESTART_MIN_MS;
  private restartTimer: NodeJS.Timeout | undefined;
  private readyWaiters: Array<{ resolve: () => void; reject: (error: Error) => void }> = [];

  /** The signer of the non-blocking mode, on this thread; closed with the bridge if the bridge made it. */
  private mainSigner: { signer: RemoteSigner; owned: boolean } | undefined;
  private started = false;

  private constructor(
    private readonly addon: KeylessAddon,
    private readonly options: ValidatedBridgeOptions,
    /** True when server handshakes with this bridge's keys pause instead of blocking (mode 'auto' or 'non-blocking', self-check passed). */
    readonly nonBlocking: boolean,
  ) {
    this.metrics = metricsFor(addon);
  }

  /** The mode this bridge got: 'non-blocking' or 'blocking'. */
  get mode(): Exclude<KeylessMode, 'auto'> {
    return this.nonBlocking ? 'non-blocking' : 'blocking';
  }

  /**
   * Loads the addon (once per process), runs the non-blocking self-check (once per process)
   * unless mode is 'blocking', and starts the signers: the worker for the blocking path and, in
   * non-blocking mode, the signer on this thread.
   */
  static async start(options: KeylessBridgeOptions): Promise<KeylessBridge> {
    const validated = validateKeylessBridgeOptions(options);
    const addon = loadKeylessAddon();
    const nonBlocking = await nonBlockingFor(addon, validated.mode);
    const bridge = new KeylessBridge(addon, validated, nonBlocking);
    addon.createBridge(bridge.id, validated.signTimeoutMs, nonBlocking);
    try {
      await bridge.startWorker();
      if (nonBlocking) await bridge.startMainSigner();
    } catch (error) {
      await bridge.close();
      throw error;
    }
    bridge.started = true;
    bridge.metrics.recordBridge(bridge.mode, 1);
    return bridge;
  }

  private async startMainSigner(): Promise<void> {
    const given = this.options.signer;
    const signer = given ?? (await createSigner(this.options.signerModule, this.options.signerOptions));
    this.mainSigner = { signer, owned: given === undefined };
    signersFor(this.addon).register(this.id, signer);
  }

  /**
   * A PEM for the `key:` option of tls.createSecureContext / https.createServer /
   * tls.connect. It names the remote key and holds no secret. `spkiDer` is the
   * key's public half (e.g. `new X509Certificate(cert).publicKey.export({ type: 'spki', format: 'der' })`).
   */
  keyPem(keyName: string, spkiDer: Buffer): string {
    return encodeKeylessKeyPem(this.id, keyName, spkiDer);
  }

  /** True while a signer worker takes requests (a dead one is restarted). */
  get signerRunning(): boolean {
    return this.closing === undefined && this.addon.workerAttached(this.id);
  }

  /** Resolves once a signer worker takes requests (at once if one does). */
  whenSignerRunning(): Promise<void> {
    if (this.closing !== undefined) return Promise.reject(new Error('keyless: bridge is closed'));
    if (this.signerRunning) return Promise.resolve();
    return new Promise((resolve, reject) => this.readyWaiters.push({ resolve, reject }));
  }

  /** Stops the worker. Handshakes needing this bridge's keys fail at once from now on. */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    clearTimeout(this.restartTimer);
    this.addon.destroyBridge(this.id);
    signersFor(this.addon).unregister(this.id);
    if (this.started) this.metrics.recordBridge(this.mode, -1);
    for (const waiter of this.readyWaiters.splice(0)) waiter.reject(new Error('keyless: bridge is closed'));
    const main = this.mainSigner;
    this.mainSigner = undefined;
    if (main?.owned === true) await Promise.resolve().then(() => main.signer.close?.()).catch(() => undefined);
    const worker = this.worker;
    this.worker = undefined;
    if (worker === undefined) return;
    const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
    const message: BridgeToWorkerMessage = { type: 'close' };
    worker.postMessage(message);
    const grace = setTimeout(() => void worker.terminate(), CLOSE_GRACE_MS);
    await exited;
    clearTimeout(grace);
  }

  private startWorker(): Promise<void> {
    const workerData: KeylessWorkerData = {
      bridgeId: this.id,
      signerModule: this.options.signerModule,
      signerOptions: this.options.signerOptions,
    };
    return new Promise((resolve, reject) => {
      const worker = new Worker(WORKER_SCRIPT, { workerData });
      worker.unref();  // the bridge alone does not keep the process alive
      let ready = false;
      let lastError: Error | undefined;
      // Listening for messages keeps the process alive even when unref'd: only until ready.
      const onMessage = (message: WorkerToBridgeMessage): void => {
        worker.off('message', onMessage);
        if (message.type === 'ready') {
          ready = true;
          this.workerStarted(worker);
          resolve();
        } else {
          reject(new Error(`keyless: signer worker failed to start: ${message.message}`));
        }
      };
      worker.on('message', onMessage);
      worker.on('error', (error) => {
        lastError = error;
      });
      worker.on('exit', (code) => {
        if (!ready) {
          const why = lastError !== undefined ? lastError.message : `exit code ${code}`;
          reject(new Error(`keyless: signer worker stopped before it was ready (${why})`));
        } else {
          this.workerExited(worker, lastError !== undefined ? 'error' : 'exit');
        }
      });
    });
  }

  private workerStarted(worker: Worker): void {
    if (this.closing !== undefined) {
      void worker.terminate();
      return;
    }
    this.worker = worker;
    this.workerStartedAt = Date.now();
    for (const waiter of this.readyWaiters.splice(0)) waiter.resolve();
  }

  private workerExited(worker: Worker, reason: string): void {
    if (this.worker !== worker || this.closing !== undefined) return;
    this.worker = undefined;
    this.metrics.recordWorkerExit(reason);
    if (Date.now() - this.workerStartedAt > 30_000) this.restartDelayMs = RESTART_MIN_MS;
    this.scheduleRestart();
  }

  private scheduleRestart(): void {
    const delay = this.restartDelayMs;
    this.restartDelayMs = Math.min(this.restartDelayMs * 2, RESTART_MAX_MS);
    this.restartTimer = setTimeout(() => {
      if (this.closing !== undefined) return;
      this.startWorker().catch(() => this.scheduleRestart());
    }, delay);
    this.restartTimer.unref();
  }
}
