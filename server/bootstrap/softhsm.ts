import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DEFAULT_SOFTHSM_MODULE } from '../config/load-config';

export const INSTALL_COMMAND = 'apt-get update && apt-get install -y softhsm2';

/**
 * Makes sure the SoftHSM2 module exists. As root with apt it installs the Debian package (and
 * says so); otherwise it explains the one command to run.
 */
export function ensureSoftHsmInstalled(say: (line: string) => void): string {
  if (fs.existsSync(DEFAULT_SOFTHSM_MODULE)) return DEFAULT_SOFTHSM_MODULE;
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  const hasApt = fs.existsSync('/usr/bin/apt-get');
  if (!isRoot || !hasApt) {
    throw new Error(`SoftHSM2 is not installed (${DEFAULT_SOFTHSM_MODULE} is missing). Install it with:\n  sudo ${INSTALL_COMMAND}\nor point pkcs11.module at your HSM's PKCS#11 library.`);
  }
  say('SoftHSM2 (the embedded default HSM) is missing: installing the Debian package softhsm2 with apt-get...');
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env });
  execFileSync('apt-get', ['install', '-y', '-qq', 'softhsm2'], { stdio: 'inherit', env });
  if (!fs.existsSync(DEFAULT_SOFTHSM_MODULE)) throw new Error(`apt-get installed softhsm2 but ${DEFAULT_SOFTHSM_MODULE} is still missing`);
  return DEFAULT_SOFTHSM_MODULE;
}

/** Writes a SoftHSM2 config whose tokens live under the state directory, and points this process at it. */
export function useSoftHsmState(stateDir: string): string {
  const tokenDir = path.join(stateDir, 'softhsm', 'tokens');
  fs.mkdirSync(tokenDir, { recursive: true, mode: 0o700 });
  const conf = path.join(stateDir, 'softhsm', 'softhsm2.conf');
  const text = `# Written by hsm-gateway for the embedded default token.\ndirectories.tokendir = ${tokenDir}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n`;
  if (!fs.existsSync(conf) || fs.readFileSync(conf, 'utf8') !== text) fs.writeFileSync(conf, text, { mode: 0o600 });
  process.env.SOFTHSM2_CONF = conf;
  return conf;
}
