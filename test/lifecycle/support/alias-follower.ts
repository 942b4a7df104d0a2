/**
 * How a keyless TLS server follows a key alias through a rotation: the library's
 * followTlsCredentials (client/tls-credentials-follower.ts), under the names these tests use.
 */
import type * as https from 'node:https';
import type { GatewayClient } from '../../../client/gateway-client';
import { concreteKeyName, followTlsCredentials, type TlsCredentialsFollower } from '../../../client/tls-credentials-follower';

export { concreteKeyName };
export type AliasFollower = TlsCredentialsFollower;

export function followAlias(client: GatewayClient, alias: string, server: https.Server, intervalMs: number): Promise<AliasFollower> {
  return followTlsCredentials(client, alias, server, intervalMs);
}
