import * as fs from 'node:fs';
import type { PinSource } from './gateway-config';

/**
 * Reads the user PIN from its file or environment variable. The variable is removed from this
 * process's environment afterwards so child processes never inherit it. Errors name the source,
 * never the PIN.
 */
export function readPin(source: PinSource, env: NodeJS.ProcessEnv = process.env): string {
  if (source.file !== undefined) {
    let text: string;
    try {
      const stat = fs.statSync(source.file);
      if ((stat.mode & 0o077) !== 0 && process.platform !== 'win32') {
        process.emitWarning(`PIN file ${source.file} is readable by group or others (mode ${(stat.mode & 0o777).toString(8)}); chmod 600 it`);
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
