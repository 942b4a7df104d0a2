// Child of nonblocking-abuse.test.ts: thousands of clients that send a TLS 1.3
// ClientHello and reset the connection 100 ms later, against a stock server (PEM key)
// or a non-blocking keyless server whose signer answers after 250 ms, so the reset
// lands while the handshake job is paused. Prints one JSON line: RSS growth after
// warm-up, counters, and whether a complete handshake still works afterwards.
//   node nonblocking-abuse-child.js <stock|nonblocking> <aborts>
import * as net from 'node:net';
import type { AddressInfo } from 'node:net';
import { Duplex } from 'node:stream';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import * as tls from 'node:tls';

import { loadKeylessAddon } from '../../../client/keyless/keyless-addon';
import { KeylessBridge } from '../../../client/keyless/keyless-bridge';
import { nodeHandshake, testPki } from './keyless-kit';

const WAVE = 64;
// The server buffers its whole first flight (OpenSSL's handshake write buffer) until
// the signature is made, so a client cannot see the pause: it resets the connection
// this long after its ClientHello, well within the signer's 250 ms.
const ABORT_AFTER_MS = 100;
const WARM_UP = 1000;
const SIGNER = path.join(__dirname, 'pss-signer.js');

/** The bytes a Node TLS 1.3 client sends first (its ClientHello), captured without a server. */
function captureClientHello(): Promise<Buffer> {
  return new Promise((resolve) => {
    const transport = new Duplex({
      read() {},
      write(chunk: Buffer, _encoding, callback) {
        resolve(Buffer.from(chunk));
        callback();
      },
    });
    const socket = tls.connect({ socket: transport, servername: 'rsa2048.test', minVersion: 'TLSv1.3', rejectUnauthorized: false });
    socket.on('error', () => undefined);
    setImmediate(() => socket.destroy());
  });
}

function abortingClient(port: number, hello: Buffer): Promise<void> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1', () => {
      socket.write(hello);
      setTimeout(() => socket.resetAndDestroy(), ABORT_AFTER_MS);
    });
    socket.on('error', () => undefined);
    socket.on('close', () => resolve());
    socket.setTimeout(5000, () => socket.destroy());
  });
}

async function abort(port: number, hello: Buffer, count: number): Promise<void> {
  for (let done = 0; done < count; done += WAVE) {
    await Promise.all(Array.from({ length: Math.min(WAVE, count - done) }, () => abortingClient(port, hello)));
  }
}

function rssAfterGc(): number {
  (globalThis as { gc?: () => void }).gc?.();
  return process.memoryUsage().rss;
}

async function main(mode: string, aborts: number): Promise<void> {
  const pki = testPki();
  const leaf = pki.leaves.rsa2048;
  let bridge: KeylessBridge | undefined;
  let key = leaf.keyPem;
  if (mode === 'nonblocking') {
    bridge = await KeylessBridge.start({ signerModule: SIGNER, signerOptions: { keyFile: leaf.keyFile, delayMs: 250 } });
    if (!bridge.nonBlocking) throw new Error('non-blocking mode unavailable');
    key = bridge.keyPem('rsa2048', leaf.spki);
  }
  let clientErrors = 0;
  const server = tls.createServer({ key, cert: leaf.certPem, minVersion: 'TLSv1.3' }, (socket) => socket.end());
  server.on('tlsClientError', () => clientErrors++);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;

  const hello = await captureClientHello();
  await abort(port, hello, WARM_UP);
  await sleep(200);
  const before = rssAfterGc();
  const started = Date.now();
  await abort(port, hello, aborts);
  const ms = Date.now() - started;
  await sleep(300); // late signer answers arrive and are dropped
  const growthMb = (rssAfterGc() - before) / 1048576;
  const handshake = await nodeHandshake(pki, port, 'rsa2048.test');
  const stats = loadKeylessAddon().nonBlockingStats();
  server.close();
  await bridge?.close();
  console.log(JSON.stringify({ mode, aborts, ms, growthMb, clientErrors, finalHandshakeOk: handshake.authorized, stats }));
}

main(process.argv[2] ?? 'stock', Number(process.argv[3] ?? '2000')).catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
