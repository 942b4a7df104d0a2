/**
 * Both halves of the load-process protocol (support/load-protocol.ts): `serveLoad` runs inside a
 * forked load process, `LoadProcess` is the orchestrator's handle on one.
 */
import { fork, type ChildProcess } from 'node:child_process';
import type { FromLoad, LoadSnapshot, ToLoad } from './load-protocol';
import { LatencyRecorder } from './stats';

/** The load a process generates; `recorder` collects latencies, `counters` the outcomes. */
export interface LoadCounters {
  ops: number;
  errors: number;
  firstError?: string;
  latency: LatencyRecorder;
}

export interface RunningLoad {
  /** Stops issuing work and resolves once everything in flight has answered. */
  stop(): Promise<void>;
}

export type LoadStarter<Spec> = (spec: Spec, counters: LoadCounters) => Promise<RunningLoad>;

/** Runs inside a load process: answers the orchestrator's messages with `starter`'s load. */
export function serveLoad<Spec>(starter: LoadStarter<Spec>): void {
  const send = (m: FromLoad): void => { process.send?.(m); };
  let counters: LoadCounters = { ops: 0, errors: 0, latency: new LatencyRecorder() };
  let running: RunningLoad | undefined;
  let windowStart = { wall: performance.now(), cpu: process.cpuUsage() };

  process.on('message', (m: ToLoad<Spec>) => {
    void (async () => {
      try {
        if (m.type === 'start') {
          counters = { ops: 0, errors: 0, latency: new LatencyRecorder() };
          running = await starter(m.spec, counters);
          windowStart = { wall: performance.now(), cpu: process.cpuUsage() };
          send({ type: 'started' });
        } else if (m.type === 'mark') {
          const cpu = process.cpuUsage(windowStart.cpu);
          const wall = performance.now();
          const { p50, p99 } = counters.latency.summary();
          const snapshot: LoadSnapshot = {
            ops: counters.ops, errors: counters.errors, firstError: counters.firstError,
            wallMicros: (wall - windowStart.wall) * 1000, cpuMicros: cpu.user + cpu.system, p50Micros: p50, p99Micros: p99,
          };
          counters.ops = 0;
          counters.errors = 0;
          counters.firstError = undefined;
          counters.latency = new LatencyRecorder();
          windowStart = { wall, cpu: process.cpuUsage() };
          send({ type: 'snapshot', snapshot });
        } else if (m.type === 'stop') {
          await running?.stop();
          running = undefined;
          send({ type: 'stopped' });
        } else if (m.type === 'exit') {
          await running?.stop();
          process.exit(0);
        }
      } catch (err) {
        send({ type: 'failed', message: (err as Error).stack ?? String(err) });
      }
    })();
  });
  process.on('disconnect', () => process.exit(0));
  send({ type: 'ready' });
}

/** The orchestrator's handle on a forked load process. */
export class LoadProcess<Spec> {
  private readonly child: ChildProcess;
  private waiters: Array<{ type: FromLoad['type']; resolve(m: FromLoad): void; reject(e: Error): void }> = [];
  private readonly ready: Promise<FromLoad>;

  constructor(script: string, env: NodeJS.ProcessEnv = process.env, execArgv: string[] = []) {
    this.child = fork(script, [], { env, execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.ready = this.expect('ready');
    this.child.on('message', (m: FromLoad) => {
      if (m.type === 'failed') {
        for (const w of this.waiters.splice(0)) w.reject(new Error(`load process failed: ${m.message}`));
        return;
      }
      const i = this.waiters.findIndex((w) => w.type === m.type);
      if (i >= 0) this.waiters.splice(i, 1)[0].resolve(m);
    });
    this.child.on('error', (err) => {
      for (const w of this.waiters.splice(0)) w.reject(new Error(`load process: ${err.message}`));
    });
    this.child.on('exit', (code, signal) => {
      for (const w of this.waiters.splice(0)) w.reject(new Error(`load process exited (code ${code}, signal ${signal})`));
    });
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  private expect(type: FromLoad['type']): Promise<FromLoad> {
    return new Promise((resolve, reject) => this.waiters.push({ type, resolve, reject }));
  }

  private async request(message: ToLoad<Spec>, answer: FromLoad['type']): Promise<FromLoad> {
    await this.ready;
    if (!this.child.connected) throw new Error(`load process is gone (exit code ${this.child.exitCode}, signal ${this.child.signalCode})`);
    const p = this.expect(answer);
    this.child.send(message);
    return p;
  }

  async start(spec: Spec): Promise<void> {
    await this.request({ type: 'start', spec }, 'started');
  }

  async mark(): Promise<LoadSnapshot> {
    const m = await this.request({ type: 'mark' }, 'snapshot');
    return (m as Extract<FromLoad, { type: 'snapshot' }>).snapshot;
  }

  async stop(): Promise<void> {
    await this.request({ type: 'stop' }, 'stopped');
  }

  async exit(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null || !this.child.connected) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.send({ type: 'exit' } satisfies ToLoad<Spec>);
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  }
}
