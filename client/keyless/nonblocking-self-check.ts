// Start-up self-check of the non-blocking mode. It passes only if, in this process:
//  - the Node major is one the mode was tested on;
//  - the internals it hooks exist;
//  - loopback handshakes (TLS 1.3 and 1.2) complete with a key that can sign only
//    from a paused job, resumed from the main loop.
// Otherwise the caller falls back to the blocking bridge.
import { randomUUID, X509Certificate } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import * as tls from 'node:tls';

import type { KeylessAddon } from './keyless-addon';
import { encodeKeylessKeyPem } from './keyless-key-pem';
import { missingSocketInternals, type TlsHooks } from './nonblocking-hooks';

/** Node majors whose TLS internals this mode was verified against. */
export const TESTED_NODE_MAJORS: readonly string[] = ['20', '22', '24'];
const SELF_CHECK_TIMEOUT_MS = 5000;

function loopbackHandshake(port: number, maxVersion: tls.SecureVersion, certDer: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, minVersion: maxVersion, maxVersion });
    socket.once('secureConnect', () => {
      const peer = socket.getPeerCertificate();
      socket.end();
      if (peer.raw !== undefined && Buffer.compare(peer.raw, certDer) === 0) resolve();
      else reject(new Error(`${maxVersion} handshake presented another certificate`));
    });
    socket.once('error', (error) => reject(new Error(`${maxVersion} handshake failed: ${error.message}`)));
  });
}

/** Resolves to undefined when the mode works here, else to the reason it does not. */
export async function nonBlockingSelfCheck(addon: KeylessAddon, hooks: TlsHooks): Promise<string | undefined> {
  const major = process.versions.node.split('.')[0] ?? '';
  if (!TESTED_NODE_MAJORS.includes(major)) {
    return `Node ${process.versions.node} is not on the tested list (${TESTED_NODE_MAJORS.join(', ')})`;
  }
  const missing = missingSocketInternals();
  if (missing !== undefined) return `Node internal ${missing} is missing`;
  try {
    hooks.install();
  } catch (error) {
    return error instanceof Error ? error.message : String(error);
  }

  const bridgeId = `self-check-${randomUUID()}`;
  const serverErrors: string[] = [];
  let server: tls.Server | undefined;
  let timer: NodeJS.Timeout | undefined;
  try {
    const { certPem, spkiDer } = addon.createSelfCheckBridge(bridgeId);
    const certDer = new X509Certificate(certPem).raw;
    server = tls.createServer({ key: encodeKeylessKeyPem(bridgeId, 'self-check', spkiDer), cert: certPem }, (socket) => socket.end());
    server.on('tlsClientError', (error) => serverErrors.push(error.message));
    const listening = server;
    // exclusive: in a node:cluster worker, listen(0) would otherwise share one port among the
    // workers, and another worker's self-check could answer this one's handshakes.
    await new Promise<void>((resolve) => listening.listen({ port: 0, host: '127.0.0.1', exclusive: true }, resolve));
    const port = (listening.address() as AddressInfo).port;
    const before = addon.nonBlockingStats().resumed;
    const handshakes = (async () => {
      await loopbackHandshake(port, 'TLSv1.3', certDer);
      await loopbackHandshake(port, 'TLSv1.2', certDer);
    })();
    const timeout = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`no loopback handshake within ${SELF_CHECK_TIMEOUT_MS} ms`)), SELF_CHECK_TIMEOUT_MS);
    });
    await Promise.race([handshakes, timeout]);
    // The self-check key signs only from a paused job: two handshakes, two resumes.
    const resumed = addon.nonBlockingStats().resumed - before;
    if (resumed < 2) return `loopback handshakes completed without pausing (${resumed} resumed jobs)`;
    return undefined;
  } catch (error) {
    const why = error instanceof Error ? error.message : String(error);
    const internals = hooks.missingHandleMethods ? '; the TLSWrap handle lacks certCbDone/enableCertCb/newSessionDone/destroySSL' : '';
    const server = serverErrors.length > 0 ? ` (server: ${serverErrors[0]})` : '';
    return `loopback self-check failed: ${why}${server}${internals}`.replace(/\s+/g, ' ').trim();
  } finally {
    clearTimeout(timer);
    server?.close();
    addon.destroyBridge(bridgeId);
  }
}
