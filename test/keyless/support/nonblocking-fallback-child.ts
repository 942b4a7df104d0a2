// Child of nonblocking-mode.test.ts: a Node whose TLSWrap lacks newSessionDone(), which
// the non-blocking mode needs to resume handshakes. Two bridges in the default mode ('auto')
// and one with the deprecated nonBlocking: true: the self-check fails once, warns once, and the
// bridges still serve in blocking mode. A bridge with mode 'non-blocking' refuses to start.
import type { Duplex } from 'node:stream';
import * as tls from 'node:tls';

import { KeylessBridge } from '../../../client/keyless/keyless-bridge';
import { TEST_SIGNER, nodeHandshake, startServer, testPki } from './keyless-kit';

async function main(): Promise<void> {
  // TLSWrap.prototype.newSessionDone (used by Node only with 'newSession' listeners).
  const handle = (new tls.TLSSocket(undefined as unknown as Duplex, { isServer: true }) as unknown as { _handle: object })._handle;
  delete (Object.getPrototypeOf(handle) as { newSessionDone?: unknown }).newSessionDone;
  const pki = testPki();
  const keys = { ec256: { keyFile: pki.leaves.ec256.keyFile } };
  const bridges = [
    await KeylessBridge.start({ signerModule: TEST_SIGNER, signerOptions: { keys } }),
    await KeylessBridge.start({ signerModule: TEST_SIGNER, signerOptions: { keys }, nonBlocking: true }),
  ];
  try {
    await KeylessBridge.start({ signerModule: TEST_SIGNER, signerOptions: { keys }, mode: 'non-blocking' });
    console.log('explicit non-blocking: started');
  } catch (error) {
    console.log(`explicit non-blocking: ${error instanceof Error ? error.message : String(error)}`);
  }
  let ok = 0;
  for (const bridge of bridges) {
    const server = await startServer({
      'ec256.test': tls.createSecureContext({ key: bridge.keyPem('ec256', pki.leaves.ec256.spki), cert: pki.leaves.ec256.certPem }),
    });
    if ((await nodeHandshake(pki, server.port, 'ec256.test')).authorized) ok++;
    await server.close();
    await bridge.close();
  }
  console.log(`nonBlocking=${bridges.some((bridge) => bridge.nonBlocking)} handshakes=${ok} ok`);
}

main().catch((error: unknown) => {
  console.log(`failed: ${error instanceof Error ? error.stack ?? error.message : String(error)}`);
  process.exit(1);
});
