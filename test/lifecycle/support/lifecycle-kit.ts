/**
 * Helpers for the key/certificate lifecycle tests. Each test file gets its OWN state directory
 * (fresh SoftHSM token, dev PKI and config from the embedded default), so generating keys and
 * replacing certificates never disturbs the shared test token. Admin commands run as real CLI
 * processes (as an operator runs them); gateways run as `hsm-gateway serve --config` processes, so
 * two processes share the token exactly as in production.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parse as parseYaml, stringify as toYaml } from 'yaml';
import { GatewayClient } from '../../../client/gateway-client';
import { ensureEmbeddedDefault } from '../../../server/bootstrap/embedded-default';
import { REPO_ROOT } from '../../support/test-environment';

export const CLI = path.join(REPO_ROOT, 'bin', 'hsm-gateway.js');
export const SOFTHSM_MODULE = '/usr/lib/softhsm/libsofthsm2.so';

export interface LifecycleState {
  dir: string;
  /** The embedded default's config.yaml (the admin commands' default). */
  configFile: string;
  softhsmConf: string;
  pinFile: string;
  pki: { ca: string; clientCert: string; clientKey: string };
}

export async function createLifecycleState(prefix: string): Promise<LifecycleState> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `hsmgw-${prefix}-`));
  const embedded = await ensureEmbeddedDefault(dir);
  return { dir, configFile: embedded.configFile, softhsmConf: embedded.softhsmConf, pinFile: path.join(dir, 'pin'), pki: embedded.pki };
}

export function removeState(state: LifecycleState | undefined): void {
  if (state && !process.env.HSMGW_KEEP_TEST_STATE) fs.rmSync(state.dir, { recursive: true, force: true });
}

export interface CliResult { code: number | null; stdout: string; stderr: string }

/** Runs the CLI with HSMGW_STATE_DIR pointing at the state (so its defaults are this state's). */
export function cli(state: LifecycleState, args: string[], options: { input?: string; env?: NodeJS.ProcessEnv } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const env: NodeJS.ProcessEnv = { ...process.env, HSMGW_STATE_DIR: state.dir, ...options.env };
    delete env.HSMGW_CONFIG;
    delete env.SOFTHSM2_CONF;
    const child = spawn(process.execPath, [CLI, ...args], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => { stdout += b.toString(); });
    child.stderr.on('data', (b: Buffer) => { stderr += b.toString(); });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    // A command that exits without reading its stdin makes this write fail with EPIPE: its exit
    // code and output are what count.
    child.stdin.on('error', () => undefined);
    child.stdin.end(options.input ?? '');
  });
}

/** Runs the CLI with no state directory (usage, --help): a child process, as a user runs it. */
export function cliInProcess(args: string[]): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => { stdout += b.toString(); });
    child.stderr.on('data', (b: Buffer) => { stderr += b.toString(); });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Runs the CLI with --json, expects `code`, and parses stdout. */
export async function cliJson<T>(state: LifecycleState, args: string[], expectedCode = 0): Promise<T> {
  const r = await cli(state, [...args, '--json']);
  if (r.code !== expectedCode) throw new Error(`hsm-gateway ${args.join(' ')}: exit ${r.code}, expected ${expectedCode}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

/** Runs a tool (openssl, pkcs11-tool); never throws on a non-zero exit. */
export function run(command: string, args: string[], options: { env?: NodeJS.ProcessEnv; input?: string } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env: { ...process.env, ...options.env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => { stdout += b.toString(); });
    child.stderr.on('data', (b: Buffer) => { stderr += b.toString(); });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    // A command that exits without reading its stdin makes this write fail with EPIPE: its exit
    // code and output are what count.
    child.stdin.on('error', () => undefined);
    child.stdin.end(options.input ?? '');
  });
}

/** `pkcs11-tool --list-objects` on the state's token; the PIN goes through the environment, never argv. */
export async function listTokenObjects(state: LifecycleState, type: 'privkey' | 'pubkey' | 'cert'): Promise<string> {
  const r = await run('pkcs11-tool', ['--module', SOFTHSM_MODULE, '--token-label', 'hsm-gateway-dev', '--login', '--pin', 'env:HSMGW_TEST_PIN', '--list-objects', '--type', type], {
    env: { SOFTHSM2_CONF: state.softhsmConf, HSMGW_TEST_PIN: fs.readFileSync(state.pinFile, 'utf8').trim() },
  });
  if (r.code !== 0) throw new Error(`pkcs11-tool failed: ${r.stderr}`);
  return r.stdout;
}

/** The pkcs11-tool block of the object with this label. */
export function objectBlock(listing: string, label: string): string {
  return listing.split(/(?=(?:Private Key|Public Key|Certificate) Object)/).find((b) => new RegExp(`label:\\s+${label.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\n`).test(b)) ?? '';
}

export interface GatewayKeyEntry { name: string; label: string }

/**
 * Writes a gateway config: the embedded default's, listening on ephemeral ports, serving `keys`
 * (plus dev-ec and dev-rsa) to the dev client identity.
 */
export function writeGatewayConfig(state: LifecycleState, file: string, keys: GatewayKeyEntry[], extra: { logLevel?: string; certificateRefreshMs?: number } = {}): string {
  const doc = parseYaml(fs.readFileSync(state.configFile, 'utf8')) as {
    keys: GatewayKeyEntry[]; authorization: { rules: Array<{ identity: string; keys: string[] }> }; listen: Record<string, string>; logging?: Record<string, unknown>;
    pkcs11: Record<string, unknown>;
  };
  if (extra.certificateRefreshMs !== undefined) doc.pkcs11.certificateRefreshMs = extra.certificateRefreshMs;
  const all = [...doc.keys.filter((k) => !keys.some((n) => n.name === k.name)), ...keys];
  doc.keys = all;
  doc.authorization.rules = [{ identity: doc.authorization.rules[0].identity, keys: all.map((k) => k.name) }];
  doc.listen = { grpc: '127.0.0.1:0', http: '127.0.0.1:0' };
  // info: startGatewayProcess waits for the "gateway listening" line.
  doc.logging = { level: extra.logLevel ?? 'info', audit: false };
  const out = path.join(state.dir, file);
  // Written whole in one rename, so a gateway watching the file never reads half of it.
  fs.writeFileSync(`${out}.tmp`, toYaml(doc), { mode: 0o600 });
  fs.renameSync(`${out}.tmp`, out);
  return out;
}

export interface GatewayProcess {
  child: ChildProcess;
  endpoint: string;
  output(): string;
  /** Sends SIGHUP. */
  hup(): void;
  stop(): Promise<number | null>;
}

/** Starts `hsm-gateway serve --config FILE` and waits until it listens. */
export function startGatewayProcess(state: LifecycleState, configFile: string): Promise<GatewayProcess> {
  const env: NodeJS.ProcessEnv = { ...process.env, HSMGW_STATE_DIR: state.dir };
  for (const v of ['HSMGW_CONFIG', 'SOFTHSM2_CONF', 'HSMGW_LISTEN', 'HSMGW_METRICS_LISTEN']) delete env[v];
  const child = spawn(process.execPath, [CLI, 'serve', '--config', configFile], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let started = false;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`gateway did not start:\n${out}`)), 30_000);
    const exitedEarly = (code: number | null): void => {
      clearTimeout(timer);
      reject(new Error(`gateway exited with ${code}:\n${out}`));
    };
    const onData = (b: Buffer): void => {
      out += b.toString();
      const m = started ? null : /"msg":"gateway listening","grpc":"[^"]+:(\d+)"/.exec(out);
      if (m) {
        started = true;
        clearTimeout(timer);
        child.off('exit', exitedEarly);
        resolve({
          child,
          endpoint: `127.0.0.1:${m[1]}`,
          output: () => out,
          hup: () => { child.kill('SIGHUP'); },
          stop: () => new Promise((done) => {
            if (child.exitCode !== null) return done(child.exitCode);
            child.once('exit', (code) => done(code));
            child.kill('SIGTERM');
          }),
        });
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('exit', exitedEarly);
  });
}

/** A GatewayClient with the state's dev client identity. */
export function devClient(state: LifecycleState, endpoint: string): GatewayClient {
  return new GatewayClient({
    endpoints: [endpoint], ca: fs.readFileSync(state.pki.ca), cert: fs.readFileSync(state.pki.clientCert), key: fs.readFileSync(state.pki.clientKey),
    serverName: 'localhost', maxRetries: 0, deadlineMs: 10_000,
  });
}

/** A two-level test CA made with openssl: root, intermediate, and `issue(csr)` for leaves. */
export interface OpensslCa {
  rootPem: string;
  intermediatePem: string;
  /** Issues a server certificate for a CSR file; returns the leaf PEM. */
  issue(csrFile: string, days: number, dnsName: string): Promise<string>;
}

async function mustRun(command: string, args: string[]): Promise<void> {
  const r = await run(command, args);
  if (r.code !== 0) throw new Error(`${command} ${args.join(' ')} failed: ${r.stderr}`);
}

export async function createOpensslCa(dir: string, name: string): Promise<OpensslCa> {
  fs.mkdirSync(dir, { recursive: true });
  const f = (n: string): string => path.join(dir, n);
  await mustRun('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', f('root.key'), '-out', f('root.pem'),
    '-subj', `/CN=${name} Root`, '-days', '30', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign']);
  await mustRun('openssl', ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', f('int.key'), '-out', f('int.csr'), '-subj', `/CN=${name} Intermediate`]);
  fs.writeFileSync(f('int.ext'), 'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign\n');
  await mustRun('openssl', ['x509', '-req', '-in', f('int.csr'), '-CA', f('root.pem'), '-CAkey', f('root.key'), '-set_serial', '2', '-out', f('int.pem'), '-days', '30', '-extfile', f('int.ext')]);
  let serial = 100;
  return {
    rootPem: fs.readFileSync(f('root.pem'), 'utf8'),
    intermediatePem: fs.readFileSync(f('int.pem'), 'utf8'),
    async issue(csrFile, days, dnsName) {
      serial++;
      const ext = f(`leaf-${serial}.ext`);
      fs.writeFileSync(ext, `basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:${dnsName},IP:127.0.0.1\n`);
      const out = f(`leaf-${serial}.pem`);
      await mustRun('openssl', ['x509', '-req', '-in', csrFile, '-CA', f('int.pem'), '-CAkey', f('int.key'), '-set_serial', String(serial), '-out', out, '-days', String(days), '-extfile', ext]);
      return fs.readFileSync(out, 'utf8');
    },
  };
}
