import * as http from 'node:http';
import type { Registry } from 'prom-client';
import type { Logger } from './logger';
import { errorMessage } from '../../common/errors';

export interface ReadinessSource {
  ready: boolean;
  state: string;
  /** What `state` is about, in the /readyz answer; default "HSM". */
  subject?: string;
}

/**
 * The plaintext operations port: /metrics (Prometheus text), /healthz (the process is alive),
 * /readyz (the token is logged in and sessions can be had). No client certificate is needed,
 * so Kubernetes probes and Prometheus can reach it; bind it to a private address.
 */
export function createOpsServer(registry: Registry, readiness: ReadinessSource, logger: Logger): http.Server {
  const server = http.createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (url === '/metrics') {
      registry.metrics().then(
        (text) => { res.writeHead(200, { 'content-type': registry.contentType }).end(text); },
        (err: unknown) => {
          logger.error('metrics collection failed', { error: errorMessage(err) });
          res.writeHead(500, { 'content-type': 'text/plain' }).end('metrics collection failed\n');
        },
      );
      return;
    }
    if (url === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      return;
    }
    if (url === '/readyz') {
      const ok = readiness.ready;
      res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' }).end(ok ? 'ready\n' : `not ready: ${readiness.subject ?? 'HSM'} ${readiness.state}\n`);
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics, /healthz or /readyz\n');
  });
  server.keepAliveTimeout = 5000;
  server.headersTimeout = 10_000;
  server.requestTimeout = 10_000;
  return server;
}
