/**
 * A stock Node TLS server for the handshake bench (forked by handshake-bench.ts): full TLS 1.3
 * handshakes, each connection closed once the handshake is done. Its key is a local PEM file
 * or keyless through the gateway (GatewayClient.tlsCredentials with keylessMode), exactly as a
 * user would write it. It counts handshakes and measures its own event-loop delay per window;
 * the orchestrator reads its CPU (all threads) from /proc.
 */
import * as fs from 'node:fs';
import type { AddressInfo } from 'node:net';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import * as tls from 'node:tls';
import { GatewayClient } from '../../client/gateway-client';
import { loadKeylessAddon } from '../../client/keyless/keyless-addon';
import type { FromProxy, ProxySpec, ToProxy } from './handshake-specs';

const spec = JSON.parse(process.env.BENCH_PROXY_SPEC ?? '{}') as ProxySpec;
const counts = { handshakes: 0, clientErrors: 0, firstError: undefined as string | undefined };
const send = (m: FromProxy): void => { process.send?.(m); };

async function credentials(): Promise<{ key: string | Buffer; cert: string | Buffer; mode: string }> {
  if (spec.server === 'pem') return { key: fs.readFileSync(spec.pem.keyFile), cert: fs.readFileSync(spec.pem.certFile), mode: 'pem' };
  const k = spec.keyless;
  const client = new GatewayClient({
    endpoints: [k.endpoint], serverName: k.serverName, ca: fs.readFileSync(k.caFile), cert: fs.readFileSync(k.certFile), key: fs.readFileSync(k.keyFile),
    ...(spec.server === 'auto' ? {} : { keylessMode: spec.server }),
  });
  const creds = await client.tlsCredentials(k.keyName);
  const registry = await client.keylessMetricsRegistry();
  const bridges = await registry.getSingleMetricAsString('hsmgw_keyless_bridges');
  const mode = /hsmgw_keyless_bridges\{mode="([^"]+)"\} 1/.exec(bridges)?.[1] ?? 'unknown';
  return { ...creds, mode };
}

async function main(): Promise<void> {
  const { key, cert, mode } = await credentials();
  const server = tls.createServer({ key, cert, minVersion: 'TLSv1.3' }, (socket) => {
    counts.handshakes++;
    socket.on('error', () => undefined);
    socket.end();
  });
  server.on('tlsClientError', (err) => {
    counts.clientErrors++;
    counts.firstError ??= err.message;
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const loopDelay = monitorEventLoopDelay({ resolution: 1 });
  const nonBlocking = (): { asyncSigns: number; dispatches: number } => {
    if (spec.server === 'pem') return { asyncSigns: 0, dispatches: 0 };
    const stats = loadKeylessAddon().nonBlockingStats();
    return { asyncSigns: stats.asyncSigns, dispatches: stats.dispatches };
  };
  let start = { handshakes: 0, clientErrors: 0, ...nonBlocking() };
  process.on('message', (m: ToProxy) => {
    if (m.type === 'window-start') {
      loopDelay.reset();
      loopDelay.enable();
      start = { handshakes: counts.handshakes, clientErrors: counts.clientErrors, ...nonBlocking() };
      counts.firstError = undefined;
    } else if (m.type === 'window-end') {
      loopDelay.disable();
      const ms = (ns: number): number => ns / 1e6;
      const stats = nonBlocking();
      send({
        type: 'window',
        window: {
          handshakes: counts.handshakes - start.handshakes, clientErrors: counts.clientErrors - start.clientErrors, firstError: counts.firstError,
          loopDelayP50Ms: ms(loopDelay.percentile(50)), loopDelayP99Ms: ms(loopDelay.percentile(99)), loopDelayMaxMs: ms(loopDelay.max),
          rssBytes: process.memoryUsage.rss(),
          asyncSignatures: stats.asyncSigns - start.asyncSigns, dispatches: stats.dispatches - start.dispatches,
        },
      });
    } else if (m.type === 'rss') {
      send({ type: 'rss', handshakes: counts.handshakes, rssBytes: process.memoryUsage.rss() });
    }
  });
  process.on('disconnect', () => process.exit(0));
  send({ type: 'listening', port: (server.address() as AddressInfo).port, mode, mainThreadId: process.pid });
}

main().catch((err) => {
  send({ type: 'failed', message: (err as Error).stack ?? String(err) });
  process.exit(1);
});
