/**
 * A keyless TLS proxy process for the resumption tests: serves the gateway's dev-ec key on an
 * ephemeral loopback port and, given a scope, shares that scope's ticket keys. Each connection is
 * answered with the sharing's counters as one JSON line. Prints {"port","certPem"} when ready.
 * Config in the TICKET_PROXY environment variable (JSON).
 */
import type { AddressInfo } from 'node:net';
import * as tls from 'node:tls';
import { GatewayClient } from '../../../client/gateway-client';
import type { GatewayClientOptions } from '../../../client/gateway-client-options';
import type { KeylessMode } from '../../../client/keyless/keyless-options';

interface ProxyConfig {
  client: GatewayClientOptions;
  scope?: string;
  keylessMode?: KeylessMode;
}

async function main(): Promise<void> {
  const config = JSON.parse(process.env.TICKET_PROXY ?? '{}') as ProxyConfig;
  const client = new GatewayClient({ ...config.client, ...(config.keylessMode ? { keylessMode: config.keylessMode } : {}) });
  const creds = await client.tlsCredentials('dev-ec');
  let stats = (): unknown => ({});
  const server = tls.createServer({ ...creds }, (socket) => socket.end(`${JSON.stringify(stats())}\n`));
  server.on('tlsClientError', () => undefined);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  if (config.scope) {
    const sharing = await client.shareTicketKeys(server, { scope: config.scope });
    stats = () => sharing.stats();
  }
  process.stdout.write(`${JSON.stringify({ port: (server.address() as AddressInfo).port, certPem: creds.cert })}\n`);
  process.once('SIGTERM', () => {
    server.close();
    void client.close().then(() => process.exit(0));
  });
}

main().catch((err: unknown) => {
  process.stdout.write(`${JSON.stringify({ error: (err as Error).message, code: (err as { code?: number }).code })}\n`);
  process.exit(1);
});
