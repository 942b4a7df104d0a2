// The agent's metrics, declared once, in one place.
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { latencyBuckets } from '../../common/latency-buckets';


export class AgentMetrics {
  readonly registry = new Registry();
  private readonly requests = new Counter({
    name: 'hsmgw_agent_sign_requests_total',
    help: 'Sign requests answered to local servers, by result: OK or the gRPC code name of the failure',
    labelNames: ['result'],
    registers: [this.registry],
  });
  private readonly duration = new Histogram({
    name: 'hsmgw_agent_sign_duration_seconds',
    help: 'Time from a sign request read on the socket to its answer: the gateway round trip with failover and queueing',
    buckets: latencyBuckets(),
    registers: [this.registry],
  });
  private readonly open = new Gauge({
    name: 'hsmgw_agent_connections',
    help: 'Connections from local servers (one per signature in flight per worker thread, reused)',
    registers: [this.registry],
  });
  private readonly refused = new Counter({
    name: 'hsmgw_agent_peers_refused_total',
    help: 'Connections refused because the peer uid and gid are not allowed (SO_PEERCRED)',
    registers: [this.registry],
  });
  private readonly protocol = new Counter({
    name: 'hsmgw_agent_protocol_errors_total',
    help: 'Connections closed because a frame was not a version 1 sign request',
    registers: [this.registry],
  });
  private readonly ready = new Gauge({
    name: 'hsmgw_agent_gateway_reachable',
    help: '1 when the last probe of the gateway (ListKeys) succeeded',
    registers: [this.registry],
  });

  signed(result: string, seconds: number | undefined): void {
    this.requests.inc({ result });
    if (seconds !== undefined) this.duration.observe(seconds);
  }

  connections(count: number): void {
    this.open.set(count);
  }

  peerRefused(): void {
    this.refused.inc();
  }

  protocolError(): void {
    this.protocol.inc();
  }

  gatewayReachable(reachable: boolean): void {
    this.ready.set(reachable ? 1 : 0);
  }
}
