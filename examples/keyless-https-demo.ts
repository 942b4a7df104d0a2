/**
 * `npm run demo [-- --key dev-rsa] [-- --workers 2]`: an HTTPS server on 127.0.0.1:8444 whose
 * certificate is the token's dev-ec (or dev-rsa) certificate and whose private key stays in the
 * HSM: the handshake signature is made by the gateway. Starts the gateway on the embedded default
 * first when none answers on HSMGW_LISTEN (default 127.0.0.1:8443).
 */
import * as fs from 'node:fs';
import * as https from 'node:https';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { GatewayClient } from '../client/gateway-client';
import { defaultStateDir } from '../server/bootstrap/embedded-default';
import { ensureDemoGateway } from './support/demo-gateway';

const DEMO_PORT = Number(process.env.DEMO_PORT ?? 8444);
/** 127.0.0.1 by default; a container sets DEMO_HOST=0.0.0.0 to publish the port. */
const DEMO_HOST = process.env.DEMO_HOST ?? '127.0.0.1';

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { key: { type: 'string', default: 'dev-ec' } } });
  const keyName = values.key as string;
  const gateway = await ensureDemoGateway((line) => console.log(`demo: ${line}`));
  const client = new GatewayClient({
    endpoints: [gateway.endpoint],
    ca: fs.readFileSync(gateway.pki.ca),
    cert: fs.readFileSync(gateway.pki.cert),
    key: fs.readFileSync(gateway.pki.key),
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
      gateway.stop();
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
