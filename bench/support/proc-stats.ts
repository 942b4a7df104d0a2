/**
 * CPU and memory of other processes, read from /proc (Linux). CPU comes in clock ticks
 * (CLK_TCK = 100 on Linux x86-64, so 10 ms resolution): measurement windows are seconds long.
 */
import * as fs from 'node:fs';

const TICK_MICROS = 10_000;

/** utime + stime of one /proc/.../stat file, in microseconds. */
function statCpuMicros(file: string): number {
  const text = fs.readFileSync(file, 'utf8');
  // The command name (field 2) may hold spaces: the fields we want come after its ')'.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // fields[0] is field 3 (state): utime is field 14, stime field 15.
  return (Number(fields[11]) + Number(fields[12])) * TICK_MICROS;
}

/** User + system CPU of a whole process (all threads), µs. */
export function processCpuMicros(pid: number): number {
  return statCpuMicros(`/proc/${pid}/stat`);
}

/** CPU of each thread of a process, µs, by thread id. */
export function threadCpuMicros(pid: number): Map<number, number> {
  const out = new Map<number, number>();
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    try {
      out.set(Number(tid), statCpuMicros(`/proc/${pid}/task/${tid}/stat`));
    } catch {
      // The thread exited between readdir and read.
    }
  }
  return out;
}

/** Resident set size now and its peak (VmHWM), bytes. */
export function memory(pid: number): { rss: number; peakRss: number } {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (name: string): number => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0) * 1024;
  return { rss: kb('VmRSS'), peakRss: kb('VmHWM') };
}

/** Voluntary context switches of a process's main thread so far (it slept waiting for something). */
export function voluntaryContextSwitches(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/^voluntary_ctxt_switches:\s+(\d+)/m.exec(status)?.[1] ?? NaN);
}

/** A CPU reading of a set of processes, to diff against a later one. */
export class CpuWindow {
  private readonly start: number[];

  constructor(private readonly pids: number[]) {
    this.start = pids.map(processCpuMicros);
  }

  /** µs of CPU used by all the processes since the window opened. */
  elapsedMicros(): number {
    return this.pids.reduce((sum, pid, i) => sum + processCpuMicros(pid) - this.start[i], 0);
  }
}
