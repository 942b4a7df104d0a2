/**
 * `hsm-gateway agent`: the local signing agent of nginx, HAProxy and other OpenSSL 3 programs
 * that load the standalone keyless provider (docs/KEYLESS-AGENT.md).
 */
import { AgentMetrics } from '../../client/agent/agent-metrics';
import { KeylessAgent } from '../../client/agent/keyless-agent';
import { accountId } from '../../client/agent/system-accounts';
import { GatewayClient } from '../../client/gateway-client';
import { createOpsServer } from '../../server/observability/http-server';
import { Logger } from '../../server/observability/logger';
import { CLIENT_FLAG_SPEC, CLIENT_OPTIONS_HELP, clientOptionsFromFlags, type ClientFlags } from './client-options';
import { EXIT_OK, UsageError, parseFlags, runCommand } from '../command-support';
import { parseHostPort } from '../../common/names';
import { errorMessage } from '../../common/errors';

export const DEFAULT_AGENT_SOCKET = '/run/hsm-gateway/agent.sock';
export const DEFAULT_AGENT_METRICS_LISTEN = '127.0.0.1:9465';
const PROBE_INTERVAL_MS = 10_000;
const DRAIN_MS = 5000;

export const AGENT_HELP = `Usage: hsm-gateway agent [options]

Runs the local signing agent for nginx, HAProxy and other OpenSSL 3 programs that load the
hsm-gateway provider (hsmgw-provider.so): they ask it for their handshake signatures over a Unix
socket, and it asks the gateway (docs/KEYLESS-AGENT.md).

  --socket PATH            the Unix socket (default ${DEFAULT_AGENT_SOCKET}, or HSMGW_AGENT_SOCKET);
                           created with mode 0660
  --socket-group GROUP     group owning the socket (name or gid): the servers' group
  --allow-uid LIST         peers admitted by uid (names or numbers, comma-separated, repeatable)
  --allow-gid LIST         peers admitted by gid; a peer passes if its uid or its gid is listed.
                           Default: this process's uid and gid only
  --metrics-listen ADDR    HTTP /metrics, /healthz, /readyz (default ${DEFAULT_AGENT_METRICS_LISTEN}, or
                           HSMGW_AGENT_METRICS_LISTEN)
  --sign-timeout-ms MS     deadline of each signature at the gateway, failover included (default 2000)
${CLIENT_OPTIONS_HELP}

Signals: SIGHUP re-reads the client certificate, key and CA (new gateway connections use them);
SIGTERM and SIGINT stop accepting, finish the signatures in flight (${DRAIN_MS / 1000} s at most) and exit.`;

const FLAGS = {
  ...CLIENT_FLAG_SPEC,
  socket: { type: 'string' },
  'socket-group': { type: 'string' },
  'allow-uid': { type: 'string', multiple: true },
  'allow-gid': { type: 'string', multiple: true },
  'metrics-listen': { type: 'string' },
  'sign-timeout-ms': { type: 'string' },
} as const;

function ids(kind: 'user' | 'group', flag: string, values: string[] | undefined): number[] {
  try {
    return (values ?? []).flatMap((v) => v.split(',')).filter((v) => v !== '').map((v) => accountId(kind, v.trim()));
  } catch (err) {
    throw new UsageError(`--${flag}: ${errorMessage(err)}`);
  }
}

function hostPort(flag: string, value: string): { host: string; port: number } {
  const address = parseHostPort(value);
  if (!address) throw new UsageError(`--${flag} "${value}": use HOST:PORT`);
  return address;
}

export async function agentCommand(argv: string[]): Promise<number> {
  return runCommand('agent', argv, async () => {
    const values = parseFlags(argv, FLAGS);
    if (values.help) {
      process.stdout.write(`${AGENT_HELP}\n`);
      return EXIT_OK;
    }
    const timeout = Number(values['sign-timeout-ms'] ?? 2000);
    if (!Number.isInteger(timeout) || timeout < 1 || timeout > 600_000) throw new UsageError('--sign-timeout-ms: an integer from 1 to 600000');
    const allowUids = ids('user', 'allow-uid', values['allow-uid']);
    const allowGids = ids('group', 'allow-gid', values['allow-gid']);
    if (allowUids.length === 0 && allowGids.length === 0) {
      allowUids.push(process.getuid?.() ?? 0);
      allowGids.push(process.getgid?.() ?? 0);
    }
    const socketGid = values['socket-group'] === undefined ? undefined : ids('group', 'socket-group', [values['socket-group']])[0];
    const socketPath = values.socket ?? process.env.HSMGW_AGENT_SOCKET ?? DEFAULT_AGENT_SOCKET;
    const ops = hostPort('metrics-listen', values['metrics-listen'] ?? process.env.HSMGW_AGENT_METRICS_LISTEN ?? DEFAULT_AGENT_METRICS_LISTEN);
    const makeClient = (): GatewayClient => new GatewayClient({ ...clientOptionsFromFlags(values as ClientFlags), deadlineMs: timeout });

    const logger = new Logger('info');
    const log = (level: 'info' | 'warn' | 'error', message: string, fields: Record<string, unknown> = {}): void => {
      logger[level](message, fields as Record<string, string | number | boolean | undefined>);
    };
    const metrics = new AgentMetrics();
    let client = makeClient();
    const agent = await KeylessAgent.start({ socketPath, socketGid, allowUids, allowGids, client, metrics, log });

    // Readiness: a light call to the gateway now and then (ListKeys), not the servers' traffic.
    const readiness = { ready: false, state: 'not probed yet', subject: 'gateway' };
    const probe = async (): Promise<void> => {
      try {
        await client.listKeys();
        readiness.ready = true;
        readiness.state = 'reachable';
      } catch (err) {
        readiness.ready = false;
        readiness.state = `unreachable (${errorMessage(err)})`;
      }
      metrics.gatewayReachable(readiness.ready);
    };
    void probe();
    const probing = setInterval(() => void probe(), PROBE_INTERVAL_MS);
    const http = createOpsServer(metrics.registry, readiness, logger);
    await new Promise<void>((resolve, reject) => {
      http.once('error', reject);
      http.listen(ops.port, ops.host, () => resolve());
    });
    log('info', 'agent listening', { socket: socketPath, metrics: `${ops.host}:${ops.port}`, allowUids: allowUids.join(','), allowGids: allowGids.join(',') });

    process.on('SIGHUP', () => {
      try {
        const next = makeClient();
        const previous = client;
        client = next;
        agent.setClient(next);
        setTimeout(() => void previous.close(), timeout + 1000).unref();
        log('info', 'agent: client certificate, key and CA re-read');
        void probe();
      } catch (err) {
        log('error', 'agent: reload failed, the previous client keeps serving', { error: errorMessage(err) });
      }
    });
    await new Promise<void>((resolve) => {
      process.once('SIGTERM', resolve);
      process.once('SIGINT', resolve);
    });
    log('info', 'agent stopping: finishing the signatures in flight');
    clearInterval(probing);
    await agent.close(DRAIN_MS);
    http.close();
    await client.close();
    return EXIT_OK;
  });
}
