import * as fs from 'node:fs';
import * as path from 'node:path';

/**
 * Writes a PEM file with exactly `mode` (also when it existed with another mode): 0600 for
 * private keys, 0640 for files only a group may read, 0644 for public material.
 */
export function writePemFile(file: string, pem: string, mode: 0o600 | 0o640 | 0o644): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, pem, { mode });
  fs.chmodSync(file, mode);
}
