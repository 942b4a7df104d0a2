/**
 * A keyless HTTPS server on N worker processes (node:cluster), with TLS session tickets kept on
 * so resumed handshakes need no remote signature. Run after `npm start` (the gateway):
 *   node dist/examples/keyless-cluster.js [--workers 2] [--key dev-ec] [--port 8445]
 */
import * as fs from 'node:fs';
import * as https from 'node:https';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { GatewayClient } from '../client/gateway-client';
import { runKeylessCluster } from '../client/keyless-cluster';
import { defaultStateDir } from '../server/bootstrap/embedded-default';

const { values } = parseArgs({ options: { workers: { type: 'string', default: '2' }, key: { type: 'string', default: 'dev-ec' }, port: { type: 'string', default: '8445' } } });

runKeylessCluster({
  workers: Number(values.workers),
  async start() {
    const pki = path.join(defaultStateDir(), 'pki');
    const client = new GatewayClient({
      endpoints: [process.env.HSMGW_ENDPOINT ?? 'localhost:8443'],
      ca: fs.readFileSync(path.join(pki, 'ca.pem')),
      cert: fs.readFileSync(path.join(pki, 'client.pem')),
      key: fs.readFileSync(path.join(pki, 'client.key')),
    });
    const server = https.createServer({ ...(await client.tlsCredentials(values.key as string)) }, (_req, res) => {
      res.end(`worker ${process.pid}: keyless ${values.key}\n`);
    });
    server.listen(Number(values.port), '127.0.0.1', () => console.log(`worker ${process.pid} serving https://localhost:${values.port}/`));
  },
});
