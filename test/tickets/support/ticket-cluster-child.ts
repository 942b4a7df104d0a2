/**
 * runKeylessCluster with 2 workers sharing a scope's ticket keys on one port: each worker has its
 * own GatewayClient and calls shareTicketKeys on its server. The primary prints "ready" once both
 * workers listen. Config in TICKET_CLUSTER (JSON).
 */
import cluster from 'node:cluster';
import * as tls from 'node:tls';
import { GatewayClient } from '../../../client/gateway-client';
import type { GatewayClientOptions } from '../../../client/gateway-client-options';
import { runKeylessCluster } from '../../../client/keyless-cluster';

const config = JSON.parse(process.env.TICKET_CLUSTER ?? '{}') as { client: GatewayClientOptions; port: number; scope: string };

if (cluster.isPrimary) {
  let ready = 0;
  cluster.on('message', () => {
    if (++ready === 2) process.stdout.write('ready\n');
  });
}

runKeylessCluster({
  workers: 2,
  async start() {
    const client = new GatewayClient(config.client);
    const server = tls.createServer(await client.tlsCredentials('dev-ec'), (socket) => socket.end(`served by ${process.pid}\n`));
    await new Promise<void>((resolve) => server.listen(config.port, '127.0.0.1', resolve));
    await client.shareTicketKeys(server, { scope: config.scope });
    process.send?.({ pid: process.pid });
  },
});
