/** Proxies sharing ticket keys, and openssl s_client sessions saved and resumed. */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { GatewayClientOptions } from '../../../client/gateway-client-options';
import type { KeylessMode } from '../../../client/keyless/keyless-options';

const CHILD = path.join(__dirname, 'ticket-proxy-child.js');

export interface TicketProxy {
  port: number;
  certFile: string;
  stop(): Promise<void>;
}

export const tempDir = (prefix: string): string => fs.mkdtempSync(path.join(os.tmpdir(), prefix));

/** Starts a keyless proxy process (optionally sharing `scope`) on `node` (default: this one). */
export function startTicketProxy(client: GatewayClientOptions, options: { scope?: string; node?: string; keylessMode?: KeylessMode } = {}): Promise<TicketProxy> {
  const child: ChildProcess = spawn(options.node ?? process.execPath, [CHILD], {
    env: { ...process.env, TICKET_PROXY: JSON.stringify({ client, scope: options.scope, keylessMode: options.keylessMode }) },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const dir = tempDir('hsmgw-ticket-proxy-');
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`proxy did not start: ${out}`)); }, 30_000);
    child.stdout?.on('data', (b: Buffer) => {
      out += b.toString();
      if (!out.includes('\n')) return;
      clearTimeout(timer);
      const ready = JSON.parse(out.split('\n')[0]) as { port?: number; certPem?: string; error?: string };
      if (ready.port === undefined || ready.certPem === undefined) {
        reject(new Error(`proxy failed: ${ready.error}`));
        return;
      }
      const certFile = path.join(dir, 'cert.pem');
      fs.writeFileSync(certFile, ready.certPem);
      resolve({
        port: ready.port,
        certFile,
        stop: () => new Promise((done) => {
          if (child.exitCode !== null) return done();
          child.once('exit', () => done());
          child.kill('SIGTERM');
          setTimeout(() => child.kill('SIGKILL'), 5000).unref();
        }),
      });
    });
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`proxy exited with ${code}: ${out}`)); });
  });
}

/** Sent after the handshake so an HTTP server (nginx, HAProxy) answers and closes. */
const HTTP_REQUEST = 'GET / HTTP/1.0\r\nHost: localhost\r\n\r\n';

export interface Handshake {
  /** 'New' or 'Reused' as s_client reports it. */
  kind: string;
  protocol: string;
  output: string;
}

/**
 * One s_client handshake: `-sess_out` saves the session (it reads until the server closes, so the
 * NewSessionTicket is stored), `-sess_in` offers a saved one.
 */
export function sClient(port: number, caFile: string, protocol: '-tls1_3' | '-tls1_2', session: { out?: string; in?: string }, input = HTTP_REQUEST): Promise<Handshake> {
  const args = ['s_client', '-connect', `127.0.0.1:${port}`, '-servername', 'localhost', '-verify_return_error', '-CAfile', caFile, protocol, '-ign_eof'];
  if (session.out) args.push('-sess_out', session.out);
  if (session.in) args.push('-sess_in', session.in);
  return new Promise((resolve) => {
    const child = execFile('openssl', args, { timeout: 15_000 }, (_err, stdout, stderr) => {
      const output = `${stdout}${stderr}`;
      const m = /^(New|Reused), (TLSv1\.[23])/m.exec(output);
      resolve({ kind: m?.[1] ?? 'failed', protocol: m?.[2] ?? '', output });
    });
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(input);
  });
}
