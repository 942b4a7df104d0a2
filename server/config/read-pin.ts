import * as fs from 'node:fs';
import type { PinSource } from './gateway-config';

/**
 * Reads the user PIN from its file or environment variable. The variable is removed from
 * process.env afterwards so child processes and worker threads never inherit it (the kernel's copy
 * in /proc/<pid>/environ stays readable to the same user: prefer pin.file). Errors name the
 * source, never the PIN.
 */
export function readPin(source: PinSource, env: NodeJS.ProcessEnv = process.env, warn: (message: string) => void = () => undefined): string {
  if (source.file !== undefined) {
    let text: string;
    try {
      const stat = fs.statSync(source.file);
      // Others must have no access. Group access is fine when the group is our own (a
      // Kubernetes secret mounted 0440 with fsGroup), and a warning otherwise.
      const others = (stat.mode & 0o007) !== 0;
      const foreignGroup = (stat.mode & 0o070) !== 0 && typeof process.getgid === 'function' && stat.gid !== process.getgid();
      if (others || foreignGroup) {
        warn(`PIN file ${source.file} is readable by ${others ? 'other users' : 'another group'} (mode ${(stat.mode & 0o777).toString(8)}); chmod 600 it`);
      }
      text = fs.readFileSync(source.file, 'utf8');
    } catch (err) {
      throw new Error(`pkcs11.pin.file: cannot read ${source.file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
    }
    const pin = text.replace(/\r?\n$/, '');
    if (pin.length === 0) throw new Error(`pkcs11.pin.file: ${source.file} is empty`);
    return pin;
  }
  const name = source.env as string;
  const pin = env[name];
  if (pin === undefined || pin.length === 0) throw new Error(`pkcs11.pin.env: environment variable ${name} is not set`);
  delete env[name];
  return pin;
}
