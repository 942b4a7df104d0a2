// The openssl.cnf that loads the standalone keyless provider (hsmgw-provider.so) next to OpenSSL's
// default provider: one writer for the demo, the tests, the bench and `keyless-pem --openssl-conf`.
import * as path from 'node:path';

/** Where `npm run build:provider` puts the module, inside this package. */
export const PROVIDER_MODULE = path.resolve(__dirname, '..', '..', '..', 'client', 'keyless', 'native', 'build', 'hsmgw-provider.so');

export interface ProviderConfig {
  /** The agent's Unix socket (the provider's default is /run/hsm-gateway/agent.sock). */
  agentSocket: string;
  /** How long a handshake waits for its signature before it fails, ms. */
  signTimeoutMs?: number;
  /** Path of hsmgw-provider.so; this package's build by default. */
  module?: string;
}

export function providerOpensslConf(config: ProviderConfig): string {
  return [
    'openssl_conf = openssl_init',
    '[openssl_init]', 'providers = provider_sect',
    '[provider_sect]', 'default = default_sect', 'hsmgw = hsmgw_sect',
    // The default provider still does everything but the signature with a keyless key.
    '[default_sect]', 'activate = 1',
    '[hsmgw_sect]', `module = ${config.module ?? PROVIDER_MODULE}`, 'activate = 1', `agent_socket = ${config.agentSocket}`,
    ...(config.signTimeoutMs === undefined ? [] : [`sign_timeout_ms = ${config.signTimeoutMs}`]),
    '',
  ].join('\n');
}
