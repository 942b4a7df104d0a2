// Child of keyless-cluster.test.ts: runKeylessCluster with 2 workers, each with its own
// GatewayClient in the default keyless mode, serving TLS on one shared port. Each worker
// reports its pid and keyless mode to the primary, which prints them as JSON lines.
import cluster from 'node:cluster';
import * as fs from 'node:fs';
import * as tls from 'node:tls';

import { GatewayClient } from '../../../client/gateway-client';
import { runKeylessCluster } from '../../../client/keyless-cluster';

interface ChildSpec {
  endpoint: string;
  caFile: string;
  certFile: string;
  keyFile: string;
  keyName: string;
  port: number;
}

const spec = JSON.parse(process.env.CLUSTER_CHILD_SPEC ?? '{}') as ChildSpec;

if (cluster.isPrimary) {
  cluster.on('message', (_worker, message: unknown) => process.stdout.write(`${JSON.stringify(message)}\n`));
}

runKeylessCluster({
  workers: 2,
  async start() {
    const client = new GatewayClient({
      endpoints: [spec.endpoint], ca: fs.readFileSync(spec.caFile), cert: fs.readFileSync(spec.certFile), key: fs.readFileSync(spec.keyFile),
    });
    // Says who served, then closes when the client does (s_client hangs up first).
    const server = tls.createServer(await client.tlsCredentials(spec.keyName), (socket) => {
      socket.on('error', () => undefined);
      socket.on('end', () => socket.end());
      socket.write(`served by ${process.pid}\n`);
    });
    await new Promise<void>((resolve) => server.listen(spec.port, '127.0.0.1', resolve));
    const metrics = await (await client.keylessMetricsRegistry()).metrics();
    const mode = /hsmgw_keyless_bridges\{mode="([^"]+)"\} 1/.exec(metrics)?.[1] ?? 'none';
    process.send?.({ pid: process.pid, mode });
  },
});
