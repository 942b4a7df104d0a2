/**
 * The signer module the keyless bridge runs in its worker thread: a GatewayClient of its own
 * (gRPC objects cannot cross threads) signing over SignStream.
 */
import type { RemoteSigner } from './keyless/remote-signer';
import { GatewayClient } from './gateway-client';
import type { GatewayClientOptions } from './gateway-client-options';

export function createRemoteSigner(options: unknown): RemoteSigner {
  const client = new GatewayClient(options as GatewayClientOptions);
  return {
    sign: (keyName, algorithm, digest) => client.signStreamed(keyName, algorithm, digest),
    close: () => client.close(),
  };
}
