/**
 * A plain Node HTTPS server for the handshake bench (forked by bench/run.ts), with its key in a
 * PEM file or keyless through the gateway (GatewayClient.tlsCredentials), in one process or a
 * node:cluster of workers. Counts completed TLS handshakes; answers every request with a tiny
 * body and closes the connection, so each client connection is one full handshake.
 */
import cluster from 'node:cluster';
import * as fs from 'node:fs';
import * as https from 'node:https';
import { GatewayClient } from '../../client/gateway-client';
import type { FromServer, HttpsServerSpec, ToServer } from './handshake-specs';

const spec = JSON.parse(process.env.BENCH_HTTPS_SERVER_SPEC ?? '{}') as HttpsServerSpec;
const counts = { handshakes: 0, clientErrors: 0, firstError: undefined as string | undefined };

async function credentials(): Promise<{ key: string | Buffer; cert: string | Buffer }> {
  if (spec.mode === 'pem' && spec.pem) return { key: fs.readFileSync(spec.pem.keyFile), cert: fs.readFileSync(spec.pem.certFile) };
  const k = spec.keyless;
  if (!k) throw new Error('keyless spec missing');
  const client = new GatewayClient({ endpoints: [k.endpoint], ca: fs.readFileSync(k.caFile), cert: fs.readFileSync(k.certFile), key: fs.readFileSync(k.keyFile) });
  return client.tlsCredentials(k.keyName);
}

/** One server in this process; resolves once listening. */
async function serve(): Promise<void> {
  const creds = await credentials();
  const server = https.createServer({ ...creds, minVersion: 'TLSv1.3' }, (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', connection: 'close' });
    res.end('ok\n');
  });
  server.on('secureConnection', () => { counts.handshakes++; });
  server.on('tlsClientError', (err) => {
    counts.clientErrors++;
    counts.firstError ??= err.message;
  });
  await new Promise<void>((resolve) => server.listen(spec.port, '127.0.0.1', resolve));
}

const send = (m: FromServer): void => { process.send?.(m); };
const countsMessage = (): FromServer => ({ type: 'counts', ...counts });

async function main(): Promise<void> {
  if (spec.workers > 0 && cluster.isPrimary) {
    const workers = Array.from({ length: spec.workers }, () => cluster.fork({ BENCH_HTTPS_SERVER_SPEC: JSON.stringify(spec) }));
    await Promise.all(workers.map((w) => new Promise<void>((resolve, reject) => {
      w.once('message', (m: FromServer) => (m.type === 'listening' ? resolve() : reject(new Error(m.type === 'failed' ? m.message : 'worker failed'))));
      w.once('exit', (code) => reject(new Error(`cluster worker exited (${code})`)));
    })));
    process.on('message', (m: ToServer) => {
      if (m.type !== 'counts') return;
      void Promise.all(workers.map((w) => new Promise<Extract<FromServer, { type: 'counts' }>>((resolve) => {
        w.once('message', (r: FromServer) => resolve(r as Extract<FromServer, { type: 'counts' }>));
        w.send({ type: 'counts' } satisfies ToServer);
      }))).then((all) => send({
        type: 'counts',
        handshakes: all.reduce((s, c) => s + c.handshakes, 0),
        clientErrors: all.reduce((s, c) => s + c.clientErrors, 0),
        firstError: all.find((c) => c.firstError)?.firstError,
      }));
    });
    send({ type: 'listening', pids: [process.pid, ...workers.map((w) => w.process.pid ?? -1)] });
    process.on('disconnect', () => {
      for (const w of workers) w.kill();
      process.exit(0);
    });
    return;
  }
  await serve();
  process.on('message', (m: ToServer) => { if (m.type === 'counts') send(countsMessage()); });
  send({ type: 'listening', pids: [process.pid] });
  process.on('disconnect', () => process.exit(0));
}

main().catch((err) => {
  send({ type: 'failed', message: (err as Error).stack ?? String(err) });
  process.exit(1);
});
