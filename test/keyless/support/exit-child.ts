// Child process of keyless-exit.test.ts: ends the process while a remote signature is
// still outstanding in the signer worker. argv[2]: "exit" (process.exit) or "drain"
// (let the event loop empty without closing the bridge).
import * as tls from 'node:tls';

import { nodeHandshake, startBridge, startServer, testPki } from './keyless-kit';

async function main(mode: string): Promise<void> {
  const pki = testPki();
  const bridge = await startBridge({ hang: { keyFile: pki.leaves.ec256.keyFile, behavior: 'hang' } }, { signTimeoutMs: 200 });
  const server = await startServer({
    'hang.test': tls.createSecureContext({ key: bridge.keyPem('hang', pki.leaves.ec256.spki), cert: pki.leaves.ec256.certPem }),
  });
  const handshake = await nodeHandshake(pki, server.port, 'hang.test', { checkServerIdentity: () => undefined });
  console.log(handshake.error !== undefined ? 'handshake failed as expected' : 'handshake unexpectedly succeeded');
  // The hanging sign() is still pending in the worker here.
  if (mode === 'exit') process.exit(0);
  await server.close();
}

void main(process.argv[2] ?? 'exit');
