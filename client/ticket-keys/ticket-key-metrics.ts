import type { Counter, Registry } from 'prom-client';
import { requirePromClient } from '../optional-prom-client';
import type { TicketRingStats } from './ticket-ring-addon';

const OUTCOMES: ReadonlyArray<keyof TicketRingStats> = ['issued', 'noKey', 'resumed', 'renewed', 'unknownKey', 'expired'];

/** The client-side metrics of shared ticket keys, declared once; one registry per shared server. */
export class TicketKeyMetrics {
  readonly registry: Registry;
  private readonly handshakes: Counter<'scope' | 'kind'>;
  private readonly keyUpdates: Counter<'scope'>;
  private readonly resumed;
  private readonly full;

  constructor(readonly scope: string, stats: () => TicketRingStats) {
    const client = requirePromClient('shareTicketKeys() (its metrics registry)');
    this.registry = new client.Registry();
    this.handshakes = new client.Counter({
      name: 'hsmgw_client_tls_handshakes_total',
      help: 'TLS handshakes completed by the server sharing ticket keys, by kind: resumed (no signature) or full.',
      labelNames: ['scope', 'kind'] as const,
      registers: [this.registry],
    });
    this.keyUpdates = new client.Counter({
      name: 'hsmgw_client_ticket_key_updates_total',
      help: 'Ticket key sets received from the gateway and installed.',
      labelNames: ['scope'] as const,
      registers: [this.registry],
    });
    this.resumed = this.handshakes.labels(scope, 'resumed');
    this.full = this.handshakes.labels(scope, 'full');
    this.resumed.inc(0);
    this.full.inc(0);
    this.keyUpdates.labels(scope).inc(0);
    const reported = new Map<string, number>();
    new client.Counter({
      name: 'hsmgw_client_ticket_outcomes_total',
      help: 'Session tickets by outcome: issued, noKey (none sent), resumed (current key), renewed (older key in its window, new ticket sent), unknownKey and expired (full handshake).',
      labelNames: ['scope', 'outcome'] as const,
      registers: [this.registry],
      collect() {
        const now = stats();
        for (const outcome of OUTCOMES) {
          this.labels(scope, outcome).inc(now[outcome] - (reported.get(outcome) ?? 0));
          reported.set(outcome, now[outcome]);
        }
      },
    });
    new client.Gauge({
      name: 'hsmgw_client_ticket_keys', help: 'Ticket keys the server holds now (current, next and those whose tickets still decrypt).',
      labelNames: ['scope'] as const, registers: [this.registry],
      collect() { this.labels(scope).set(stats().keys); },
    });
  }

  handshake(resumed: boolean): void {
    (resumed ? this.resumed : this.full).inc();
  }

  keysUpdated(): void {
    this.keyUpdates.labels(this.scope).inc();
  }
}
