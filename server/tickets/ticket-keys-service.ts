import { status } from '@grpc/grpc-js';
import type { TicketKeysServer } from '../../proto/generated/hsmgateway/v1/ticket_keys';
import { TICKET_SCOPE } from '../config/load-config';
import { callerConnection, type ConnectionLookup } from '../rpc/caller-connection';
import { GatewayError, STATUS_NAMES, toGatewayError } from '../rpc/gateway-error';
import type { TicketKeyCall, TicketKeyWatchers, WatcherDeps } from './ticket-key-watchers';

export interface TicketKeysServiceDeps extends WatcherDeps {
  connections: ConnectionLookup;
  watchers: TicketKeyWatchers;
}

/**
 * The TicketKeys service: identity → scope check → authorization → a watcher that sends the
 * scope's keys now and at every epoch boundary. Refusals are counted and audited in aggregate.
 */
export function createTicketKeysService(deps: TicketKeysServiceDeps): TicketKeysServer {
  return {
    watchTicketKeys(call: TicketKeyCall): void {
      const scope = call.request.scope;
      let identityLabel = '(unauthenticated)';
      try {
        const { identity } = callerConnection(call, deps.connections);
        identityLabel = identity.label;
        if (!TICKET_SCOPE.test(scope)) throw new GatewayError(status.INVALID_ARGUMENT, 'scope must be 1-64 letters, digits, ".", "_" or "-"');
        if (!deps.policy.current.authorizer.ticketScopeAllowed(identity, scope)) {
          deps.metrics.authorizationDenied('ticket_key_scope');
          throw new GatewayError(status.PERMISSION_DENIED, `identity "${identity.label}" may not watch ticket keys of scope "${scope}"`);
        }
        deps.watchers.open(call, identity, scope);
      } catch (err) {
        const e = toGatewayError(err);
        const codeName = STATUS_NAMES[e.code] ?? String(e.code);
        // Refused scopes are the caller's strings: never a label.
        deps.metrics.ticketKeyFetch('-', codeName);
        deps.audit?.refused({ kind: 'ticket keys', identity: identityLabel, outcome: codeName, key: scope.slice(0, 64), algorithm: '', error: e.message, rpc: 'WatchTicketKeys' });
        call.emit('error', { code: e.code, details: e.message });
      }
    },
  };
}
