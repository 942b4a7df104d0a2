/**
 * `npm run demo [-- --key dev-rsa] [-- --workers 2]`: an HTTPS server on 127.0.0.1:8444 whose
 * certificate is the token's dev-ec (or dev-rsa) certificate and whose private key stays in the
 * HSM: the handshake signature is made by the gateway. Starts the gateway on the embedded default
 * first when none answers on 127.0.0.1:8443.
 */
import * as fs from 'node:fs';
import * as https from 'node:https';
import * as net from 'node:net';
import * as path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { parseArgs } from 'node:util';
import { GatewayClient } from '../client/gateway-client';
import { defaultStateDir } from '../server/bootstrap/embedded-default';

const GATEWAY = { host: '127.0.0.1', port: 8443 };
const DEMO_PORT = Number(process.env.DEMO_PORT ?? 8444);
/** 127.0.0.1 by default; a container sets DEMO_HOST=0.0.0.0 to publish the port. */
const DEMO_HOST = process.env.DEMO_HOST ?? '127.0.0.1';

function gatewayAnswers(): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(GATEWAY.port, GATEWAY.host, () => { s.destroy(); resolve(true); });
    s.on('error', () => resolve(false));
  });
}

/** The gateway must run in another process: a keyless handshake blocks this one while it signs. */
async function ensureGateway(): Promise<ChildProcess | undefined> {
  if (await gatewayAnswers()) {
    console.log(`demo: using the gateway already listening on ${GATEWAY.host}:${GATEWAY.port}`);
    return undefined;
  }
  console.log('demo: starting the gateway on the embedded default (SoftHSM2)...');
  const cli = path.resolve(__dirname, '..', '..', 'bin', 'hsm-gateway.js');
  const child = spawn(process.execPath, [cli, 'serve'], { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, HSMGW_CONFIG: '' } });
  for (let i = 0; i < 600; i++) {
    if (await gatewayAnswers()) return child;
    if (child.exitCode !== null) throw new Error(`the gateway exited with code ${child.exitCode}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('the gateway did not start within 60 s');
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { key: { type: 'string', default: 'dev-ec' } } });
  const keyName = values.key as string;
  const gateway = await ensureGateway();
  const pki = path.join(defaultStateDir(), 'pki');
  const client = new GatewayClient({
    endpoints: [`localhost:${GATEWAY.port}`],
    ca: fs.readFileSync(path.join(pki, 'ca.pem')),
    cert: fs.readFileSync(path.join(pki, 'client.pem')),
    key: fs.readFileSync(path.join(pki, 'client.key')),
  });
  // The only change an existing HTTPS service needs: its key and cert come from the client.
  const credentials = await client.tlsCredentials(keyName);
  const server = https.createServer({
    ...credentials,
    // Resumed handshakes need no signature: keep session tickets on (Node's default) and say so.
    sessionTimeout: 300,
  }, (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end(`hello from a keyless ${keyName} server: the private key never left the HSM\n`);
  });
  await new Promise<void>((resolve) => server.listen(DEMO_PORT, DEMO_HOST, resolve));
  const certFile = path.join(defaultStateDir(), `${keyName}-chain.pem`);
  fs.writeFileSync(certFile, credentials.cert);
  console.log(`demo: HTTPS on https://localhost:${DEMO_PORT}/ with the token's ${keyName} certificate and a keyless key.`);
  console.log(`Try:  curl --cacert ${certFile} https://localhost:${DEMO_PORT}/`);
  console.log('Ctrl-C stops the demo (and the gateway, if the demo started it).');

  const stop = (): void => {
    server.close();
    void client.close().finally(() => {
      gateway?.kill('SIGTERM');
      process.exit(0);
    });
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

main().catch((err: unknown) => {
  console.error(`demo: ${(err as Error).message}`);
  process.exit(1);
});
