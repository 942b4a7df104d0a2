/**
 * The orchestrator (bench/run.ts) drives each load process over IPC with the same protocol:
 * `start` begins continuous load, each `mark` answers a snapshot and opens a new window (so the
 * measured window sits inside steady load, with no ramp-up or drain), `stop` ends the load, and
 * `exit` ends the process.
 */

export type ToLoad<Spec> =
  | { type: 'start'; spec: Spec }
  | { type: 'mark' }
  | { type: 'stop' }
  | { type: 'exit' };

/** What a load process saw since the previous mark. */
export interface LoadSnapshot {
  /** Operations completed in the window. */
  ops: number;
  errors: number;
  /** The first error message of the window, if any. */
  firstError?: string;
  wallMicros: number;
  /** This process's own CPU (process.cpuUsage user + system) in the window. */
  cpuMicros: number;
  /** Latency percentiles of the window's operations, µs (NaN when not measured). */
  p50Micros: number;
  p99Micros: number;
}

export type FromLoad =
  | { type: 'ready' }
  | { type: 'started' }
  | { type: 'snapshot'; snapshot: LoadSnapshot }
  | { type: 'stopped' }
  | { type: 'failed'; message: string };
