/**
 * Two gateways share the token; a keyless HTTPS server is configured with both. Stopping one
 * under load loses no TLS handshake beyond those in flight at the moment of the stop.
 */
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as https from 'node:https';
import * as tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import { GatewayClient } from '../../client/gateway-client';
import { startGatewayProcess } from '../support/gateway-process';

function handshake(port: number, ca: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ca }, () => {
      const ok = s.authorized;
      s.end();
      resolve(ok);
    });
    s.on('error', () => resolve(false));
    s.setTimeout(10_000, () => { s.destroy(); resolve(false); });
  });
}

describe('failover between two gateways', () => {
  for (const how of ['SIGTERM', 'SIGKILL'] as const) {
    it(`one gateway stopped by ${how} under load: no handshake lost beyond those in flight`, { timeout: 90_000 }, async () => {
      const a = await startGatewayProcess();
      const b = await startGatewayProcess();
      const client = new GatewayClient({ ...a.clientOptions(), endpoints: [a.endpoint, b.endpoint], keylessSignTimeoutMs: 3000, maxRetries: 3 });
      try {
        const creds = await client.tlsCredentials('dev-ec');
        const server = https.createServer({ ...creds }, (_q, r) => r.end('ok'));
        await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
        const port = (server.address() as AddressInfo).port;
        const concurrency = 8;
        let ok = 0;
        let failed = 0;
        let stopAt = 0;
        const failedTimes: number[] = [];
        const end = Date.now() + 4000;
        const workers = Array.from({ length: concurrency }, async () => {
          while (Date.now() < end) {
            if (await handshake(port, creds.cert)) ok++;
            else {
              failed++;
              failedTimes.push(Date.now());
            }
          }
        });
        await new Promise((r) => setTimeout(r, 1200));
        stopAt = Date.now();
        if (how === 'SIGTERM') assert.equal(await a.terminate(), 0);
        else await a.kill();
        await Promise.all(workers);
        server.close();
        assert.ok(ok > 50, `${ok} handshakes completed`);
        assert.ok(failed <= concurrency, `${failed} failed handshakes (at most the ${concurrency} in flight at the stop)`);
        for (const t of failedTimes) assert.ok(t >= stopAt, 'no failure before the stop');
        if (how === 'SIGTERM') assert.equal(failed, 0, 'a graceful stop loses nothing: its streams drain and clients fail over');
      } finally {
        await client.close();
        await a.stop();
        await b.stop();
      }
    });
  }
});
