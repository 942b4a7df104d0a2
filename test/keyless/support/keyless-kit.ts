// Shared helpers of the keyless tests: a throwaway PKI made with the openssl CLI,
// servers, and clients (openssl s_client, curl, node tls).
import { execFile, execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import * as fs from 'node:fs';
import * as https from 'node:https';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tls from 'node:tls';

import { KeylessBridge, type KeylessMode } from '../../../client/keyless/keyless-bridge';
import type { TestKeyConfig, TestSignerOptions } from '../../fixtures/keyless/test-signer';

export const TEST_SIGNER = path.resolve(__dirname, '..', '..', 'fixtures', 'keyless', 'test-signer.js');

/** Leaf keys of the test PKI; each has a certificate for "<name>.test", localhost and 127.0.0.1. */
export const LEAVES = {
  ec256: ['EC', 'ec_paramgen_curve:P-256'],
  ec384: ['EC', 'ec_paramgen_curve:P-384'],
  rsa2048: ['RSA', 'rsa_keygen_bits:2048'],
  rsa3072: ['RSA', 'rsa_keygen_bits:3072'],
  // Same types, other keys: their signatures must not verify against the certs above.
  ec256other: ['EC', 'ec_paramgen_curve:P-256'],
  rsa2048other: ['RSA', 'rsa_keygen_bits:2048'],
  client: ['EC', 'ec_paramgen_curve:P-256'],
  clientrsa: ['RSA', 'rsa_keygen_bits:2048'],
  ed25519: ['ED25519', undefined],
  ed25519other: ['ED25519', undefined],
} as const;
export type LeafName = keyof typeof LEAVES;

export interface Leaf {
  keyFile: string;
  keyPem: string;
  certPem: string;
  spki: Buffer;
}

export interface Pki {
  dir: string;
  caFile: string;
  caPem: string;
  leaves: Record<LeafName, Leaf>;
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

function generate(dir: string): void {
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key',
    '-out', 'ca.pem', '-subj', '/CN=keyless test CA', '-days', '30'], dir);
  for (const [name, [algorithm, option]] of Object.entries(LEAVES)) {
    openssl(['genpkey', '-algorithm', algorithm, ...(option !== undefined ? ['-pkeyopt', option] : []), '-out', `${name}.key`], dir);
    openssl(['req', '-new', '-key', `${name}.key`, '-subj', `/CN=${name}.test`, '-out', `${name}.csr`], dir);
    fs.writeFileSync(path.join(dir, `${name}.ext`),
      `subjectAltName=DNS:${name}.test,DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n`);
    openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
      '-days', '30', '-extfile', `${name}.ext`, '-out', `${name}.pem`], dir);
  }
}

/** The test PKI, generated once and cached in the temp dir for a day (RSA keygen is slow). */
export function testPki(): Pki {
  const dir = path.join(os.tmpdir(), `hsmgw-keyless-pki-v2-${process.getuid?.() ?? 0}`);
  const fresh = fs.existsSync(path.join(dir, 'ready')) && Date.now() - fs.statSync(path.join(dir, 'ready')).mtimeMs < 86_400_000;
  if (!fresh) {
    const staging = fs.mkdtempSync(`${dir}.tmp-`);
    generate(staging);
    fs.writeFileSync(path.join(staging, 'ready'), '');
    fs.rmSync(dir, { recursive: true, force: true });
    try {
      fs.renameSync(staging, dir);
    } catch {
      fs.rmSync(staging, { recursive: true, force: true }); // another test process won the race
    }
  }
  const leaves = {} as Record<LeafName, Leaf>;
  for (const name of Object.keys(LEAVES) as LeafName[]) {
    const keyFile = path.join(dir, `${name}.key`);
    const certPem = fs.readFileSync(path.join(dir, `${name}.pem`), 'utf8');
    const spki = new X509Certificate(certPem).publicKey.export({ type: 'spki', format: 'der' });
    leaves[name] = { keyFile, keyPem: fs.readFileSync(keyFile, 'utf8'), certPem, spki };
  }
  const caFile = path.join(dir, 'ca.pem');
  return { dir, caFile, caPem: fs.readFileSync(caFile, 'utf8'), leaves };
}

export function tempFile(prefix: string): string {
  return path.join(fs.mkdtempSync(path.join(os.tmpdir(), `${prefix}-`)), 'file');
}

export function startBridge(keys: Record<string, TestKeyConfig>, extra: { logFile?: string; signTimeoutMs?: number; mode?: KeylessMode } = {}): Promise<KeylessBridge> {
  const signerOptions: TestSignerOptions = { keys, ...(extra.logFile !== undefined ? { logFile: extra.logFile } : {}) };
  return KeylessBridge.start({
    signerModule: TEST_SIGNER,
    signerOptions,
    ...(extra.signTimeoutMs !== undefined ? { signTimeoutMs: extra.signTimeoutMs } : {}),
    ...(extra.mode !== undefined ? { mode: extra.mode } : {}),
  });
}

/** Reads and clears the test signer's request log: ["<key> <algorithm>", ...]. */
export function takeLog(logFile: string): string[] {
  if (!fs.existsSync(logFile)) return [];
  const lines = fs.readFileSync(logFile, 'utf8').split('\n').filter((line) => line !== '');
  fs.writeFileSync(logFile, '');
  return lines;
}

export interface TestServer {
  port: number;
  /** Messages of handshake errors seen by the server (tlsClientError). */
  clientErrors: string[];
  close(): Promise<void>;
}

/** An HTTPS server answering "keyless ok", with one secure context per SNI name. */
export async function startServer(contexts: Record<string, tls.SecureContext>, options: tls.TlsOptions = {}): Promise<TestServer> {
  const clientErrors: string[] = [];
  const server = https.createServer({
    ...options,
    SNICallback: (name, callback) => {
      const context = contexts[name];
      if (context === undefined) callback(new Error(`no context for ${name}`));
      else callback(null, context);
    },
  }, (_request, response) => {
    response.end('keyless ok\n');
  });
  server.on('tlsClientError', (error) => clientErrors.push(error.message));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    clientErrors,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}

export interface ToolResult {
  ok: boolean;
  output: string;
}

export function run(command: string, args: string[], timeoutMs = 20_000): Promise<ToolResult> {
  return new Promise((resolve) => {
    const child = execFile(command, args, { timeout: timeoutMs, encoding: 'utf8' }, (error, stdout, stderr) => {
      resolve({ ok: error === null, output: `${stdout}\n${stderr}` });
    });
    child.stdin?.on('error', () => undefined); // a command may exit without reading its input
    child.stdin?.end();
  });
}

/** openssl s_client that verifies the chain and the host name, then hangs up. */
export function sClient(pki: Pki, port: number, serverName: string, extra: string[] = [], verifyName = serverName): Promise<ToolResult> {
  return run('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-servername', serverName,
    '-verify_return_error', '-verify_hostname', verifyName, '-CAfile', pki.caFile, '-brief', ...extra]);
}

export interface NodeHandshake {
  authorized: boolean;
  error?: Error;
  protocol: string | null;
}

/** A node tls client handshake (optionally with a client certificate). */
export function nodeHandshake(pki: Pki, port: number, serverName: string, options: tls.ConnectionOptions = {}): Promise<NodeHandshake> {
  return new Promise((resolve) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername: serverName, ca: pki.caPem, ...options });
    socket.once('secureConnect', () => {
      const result = { authorized: socket.authorized, protocol: socket.getProtocol() };
      socket.end();
      resolve(result);
    });
    socket.once('error', (error) => resolve({ authorized: false, error, protocol: null }));
  });
}
