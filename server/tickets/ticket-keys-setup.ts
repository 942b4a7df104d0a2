import type * as grpc from '@grpc/grpc-js';
import { TicketKeysService } from '../../proto/generated/hsmgateway/v1/ticket_keys';
import type { AccessPolicyHolder } from '../auth/access-policy';
import { ConfigError } from '../config/config-error';
import type { TicketKeysSection } from '../config/gateway-config';
import type { AuditLog } from '../observability/audit-log';
import type { Logger } from '../observability/logger';
import type { GatewayMetrics } from '../observability/metrics';
import type { Hsm } from '../pkcs11/hsm';
import { TicketRootError } from '../pkcs11/ticket-root';
import type { ConnectionLookup } from '../rpc/caller-connection';
import { TicketKeySource } from './ticket-key-source';
import { TicketKeyWatchers } from './ticket-key-watchers';
import { createTicketKeysService } from './ticket-keys-service';

/**
 * The ticket-key source, checked against the token: a missing or extractable root is a
 * configuration error (the gateway exits 2), not something to serve around.
 */
export function openTicketKeySource(hsm: Hsm, config: TicketKeysSection, metrics: GatewayMetrics, logger: Logger): TicketKeySource {
  const source = new TicketKeySource(hsm, config, {
    derived: (ok, error) => {
      metrics.ticketKeyDerived(ok);
      if (!ok) logger.warn('ticket key derivation failed; cached keys keep serving', { error });
    },
  });
  try {
    source.checkRoot();
  } catch (err) {
    if (err instanceof TicketRootError) throw new ConfigError('ticketKeys.root', err.message.replace(/^ticketKeys\.root: /, ''));
    throw err;
  }
  return source;
}

export interface TicketKeysDeps {
  source: TicketKeySource;
  policy: AccessPolicyHolder;
  connections: ConnectionLookup;
  metrics: GatewayMetrics;
  audit: AuditLog | undefined;
  logger: Logger;
}

/** Adds the TicketKeys service to the gRPC server; returns its open streams. */
export function addTicketKeysService(server: grpc.Server, deps: TicketKeysDeps): TicketKeyWatchers {
  const watchers = new TicketKeyWatchers(deps);
  deps.metrics.watchTicketKeyWatchers(watchers);
  server.addService(TicketKeysService, createTicketKeysService({ ...deps, watchers }));
  return watchers;
}
