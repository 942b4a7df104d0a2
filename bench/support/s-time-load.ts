/** Full-handshake load from C: `openssl s_time -new` processes, each one connection at a time. */
import { spawn, type ChildProcess } from 'node:child_process';

/** `count` s_time processes running full handshakes against 127.0.0.1:`port` until stopped. */
export function startSTimeLoad(port: number, count: number): ChildProcess[] {
  return Array.from({ length: count }, () => spawn('openssl', ['s_time', '-connect', `127.0.0.1:${port}`, '-new', '-time', '3600'], { stdio: 'ignore' }));
}

export async function stopSTimeLoad(load: ChildProcess[]): Promise<void> {
  await Promise.all(load.map((p) => new Promise<void>((resolve) => {
    if (p.exitCode !== null || p.signalCode !== null) return resolve();
    p.once('exit', () => resolve());
    p.kill('SIGTERM');
  })));
}
