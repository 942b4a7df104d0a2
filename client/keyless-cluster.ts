import cluster from 'node:cluster';
import * as os from 'node:os';
import { errorMessage } from '../common/errors';

export interface KeylessClusterOptions {
  /** Worker processes; default: the number of CPUs. */
  workers?: number;
  /** Runs in each worker: create the GatewayClient and the server there (not in the primary). */
  start(): void | Promise<void>;
  /** Called in the primary when a worker dies unexpectedly (it is replaced after a short delay). */
  onWorkerExit?(code: number | null, signal: string | null): void;
}

/**
 * Runs a keyless TLS server in N worker processes, one per core by default: TLS is CPU work, and
 * one Node process uses one core for it. The listening socket is shared by node:cluster; each
 * worker has its own GatewayClient, in the default keyless mode (handshakes pause, not block,
 * while the gateway signs).
 */
export function runKeylessCluster(options: KeylessClusterOptions): void {
  if (!cluster.isPrimary) {
    Promise.resolve(options.start()).catch((err: unknown) => {
      console.error(`keyless worker ${process.pid}: ${errorMessage(err)}`);
      process.exit(1);
    });
    return;
  }
  const count = options.workers ?? os.availableParallelism();
  let stopping = false;
  for (let i = 0; i < count; i++) cluster.fork();
  cluster.on('exit', (_worker, code, signal) => {
    if (stopping) return;
    options.onWorkerExit?.(code, signal);
    setTimeout(() => { if (!stopping) cluster.fork(); }, 500);
  });
  const stop = (): void => {
    stopping = true;
    for (const worker of Object.values(cluster.workers ?? {})) worker?.kill('SIGTERM');
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}
