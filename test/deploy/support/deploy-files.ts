/** Paths of the deployment artifacts and small helpers shared by the test/deploy tests. */
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { REPO_ROOT } from '../../support/test-environment';
import { parsePrometheusText } from '../../support/prometheus-text';
import { freePort } from '../../support/free-port';

export { freePort };

export { REPO_ROOT };
export const DEPLOY = path.join(REPO_ROOT, 'deploy');
export const deployPath = (...parts: string[]): string => path.join(DEPLOY, ...parts);

/** The absolute path of a program on PATH (or at an absolute path), or undefined. */
export function which(program: string): string | undefined {
  if (path.isAbsolute(program)) return fs.existsSync(program) ? program : undefined;
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    const p = path.join(dir, program);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      if (fs.statSync(p).isFile()) return p;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** Runs a program to completion with a timeout; never throws on a non-zero exit. */
export function run(program: string, args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number; input?: string } = {}): SpawnSyncReturns<string> {
  return spawnSync(program, args, { encoding: 'utf8', timeout: options.timeoutMs ?? 30_000, cwd: options.cwd, env: options.env ?? process.env, input: options.input });
}

/** One line describing a finished process, for assertion messages. */
export function describeRun(r: SpawnSyncReturns<string>): string {
  return `exit ${r.status}${r.signal ? ` (signal ${r.signal})` : ''}${r.error ? ` error ${r.error.message}` : ''}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;
}

export function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `hsmgw-${prefix}-`));
}


/** Polls fn until it returns a value other than undefined, or throws after timeoutMs. */
export async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 15_000, intervalMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** HTTP status of a GET, or undefined when the connection fails. Bounded by a 2 s timeout. */
export async function httpStatus(url: string): Promise<number | undefined> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
    await res.arrayBuffer();
    return res.status;
  } catch {
    return undefined;
  }
}

/** The metric family names a live /metrics endpoint exposes (from its # TYPE lines). */
export async function scrapeFamilies(metricsUrl: string): Promise<Map<string, string>> {
  const res = await fetch(metricsUrl, { signal: AbortSignal.timeout(5000) });
  if (res.status !== 200) throw new Error(`${metricsUrl}: HTTP ${res.status}`);
  return parsePrometheusText(await res.text()).types;
}

/** A child process that is killed (SIGKILL) if a test forgets it; wait() resolves with its exit. */
export interface Child {
  pid: number;
  output(): string;
  wait(timeoutMs: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  kill(signal?: NodeJS.Signals): void;
}

const children = new Set<ReturnType<typeof spawn>>();
process.on('exit', () => { for (const c of children) c.kill('SIGKILL'); });

export function start(program: string, args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Child {
  const child = spawn(program, args, { cwd: options.cwd, env: options.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let out = '';
  child.stdout?.on('data', (d: Buffer) => { out += d.toString(); if (out.length > 200_000) out = out.slice(-100_000); });
  child.stderr?.on('data', (d: Buffer) => { out += d.toString(); if (out.length > 200_000) out = out.slice(-100_000); });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => { children.delete(child); resolve({ code, signal }); });
  });
  return {
    pid: child.pid ?? -1,
    output: () => out,
    wait: (timeoutMs) => Promise.race([
      exited,
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`process ${child.pid} still running after ${timeoutMs} ms; output:\n${out}`)), timeoutMs).unref()),
    ]),
    kill: (signal = 'SIGTERM') => { if (child.exitCode === null && child.signalCode === null) child.kill(signal); },
  };
}
