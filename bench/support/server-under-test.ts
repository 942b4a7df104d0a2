/** A server whose CPU the bench measures per operation: the gateway, or the grpc-js stub. */
import { fork, type ChildProcess } from 'node:child_process';
import { memory, processCpuMicros, threadCpuMicros } from './proc-stats';

export interface ServerCounters {
  /** Whole-process CPU, µs. */
  cpuMicros: number;
  /** CPU of the main (event-loop) thread alone, µs. */
  mainThreadCpuMicros: number;
  /** hsmgw_hsm_operation_seconds_sum / _count (NaN where there is no HSM). */
  hsmSeconds: number;
  hsmCount: number;
}

export interface ServerUnderTest {
  readonly pid: number;
  readonly endpoint: string;
  counters(): Promise<ServerCounters>;
  memory(): { rss: number; peakRss: number };
}

/** bench/sign/stub-signer.js in its own process. */
export class StubSigner implements ServerUnderTest {
  private constructor(private readonly child: ChildProcess, readonly endpoint: string) {}

  static async start(script: string, caFile: string, certFile: string, keyFile: string): Promise<StubSigner> {
    const child = fork(script, [caFile, certFile, keyFile], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const port = await new Promise<number>((resolve, reject) => {
      child.once('message', (m: { port: number }) => resolve(m.port));
      child.once('exit', (code) => reject(new Error(`stub signer exited (${code})`)));
    });
    return new StubSigner(child, `localhost:${port}`);
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  async counters(): Promise<ServerCounters> {
    return { cpuMicros: processCpuMicros(this.pid), mainThreadCpuMicros: threadCpuMicros(this.pid).get(this.pid) ?? NaN, hsmSeconds: NaN, hsmCount: NaN };
  }

  memory(): { rss: number; peakRss: number } {
    return memory(this.pid);
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.disconnect();
    await exited;
  }
}
