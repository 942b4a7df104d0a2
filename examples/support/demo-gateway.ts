/**
 * The demos' gateway: the one listening on HSMGW_LISTEN (default 127.0.0.1:8443), or one started
 * on the embedded default (SoftHSM2) when none answers there, stopped again with the demo.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { defaultStateDir } from '../../server/bootstrap/embedded-default';
import { parseHostPort } from '../../common/names';
import { DEFAULT_GRPC_LISTEN } from '../../server/config/load-config';

export const CLI = path.resolve(__dirname, '..', '..', '..', 'bin', 'hsm-gateway.js');

export interface DemoGateway {
  /** host:port of the gateway's gRPC listener. */
  endpoint: string;
  /** The embedded default's dev PKI: the CA and the dev client identity. */
  pki: { ca: string; cert: string; key: string };
  /** Stops the gateway if the demo started it. */
  stop(): void;
}

/** Where to reach a listen address: a wildcard host is reached on loopback. */
function reachable(listen: string): { host: string; port: number } {
  const address = parseHostPort(listen);
  if (!address) throw new Error(`HSMGW_LISTEN must be host:port (got ${JSON.stringify(listen)})`);
  const host = address.host === '0.0.0.0' ? '127.0.0.1' : address.host === '::' ? '::1' : address.host;
  return { host, port: address.port };
}

function answers(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, host, () => { s.destroy(); resolve(true); });
    s.on('error', () => resolve(false));
  });
}

export async function ensureDemoGateway(log: (line: string) => void): Promise<DemoGateway> {
  const listen = process.env.HSMGW_LISTEN || DEFAULT_GRPC_LISTEN;
  const { host, port } = reachable(listen);
  const pkiDir = path.join(defaultStateDir(), 'pki');
  const pki = { ca: path.join(pkiDir, 'ca.pem'), cert: path.join(pkiDir, 'client.pem'), key: path.join(pkiDir, 'client.key') };
  const endpoint = `localhost:${port}`;
  if (await answers(host, port)) {
    log(`using the gateway already listening on ${listen}`);
    return { endpoint, pki, stop: () => undefined };
  }
  log(`starting the gateway on the embedded default (SoftHSM2), listening on ${listen}...`);
  // The gateway runs in its own process: HSM calls and gRPC never share a loop with the demo.
  const child: ChildProcess = spawn(process.execPath, [CLI, 'serve'], { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, HSMGW_CONFIG: '' } });
  for (let i = 0; i < 600; i++) {
    if (await answers(host, port) && fs.existsSync(pki.cert)) return { endpoint, pki, stop: () => { child.kill('SIGTERM'); } };
    if (child.exitCode !== null) throw new Error(`the gateway exited with code ${child.exitCode}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  child.kill('SIGTERM');
  throw new Error('the gateway did not start within 60 s');
}
