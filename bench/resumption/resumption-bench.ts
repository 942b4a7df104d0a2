/**
 * Fleet resumption: 2 keyless proxies (Node, default keyless mode) behind an alternating "load
 * balancer", 90 % returning clients. Once with each proxy's own ticket key, once with the scope's
 * shared keys (shareTicketKeys), in interleaved rounds. Reports remote signatures per 1,000
 * connections (the gateway's own count) and the handshake rate of each configuration.
 */
import * as fs from 'node:fs';
import type { GatewayProcess } from '../support/gateway-process';
import { spread, round, type Spread } from '../support/stats';
import { fmtSpread, markdownTable } from '../support/table';
import type { Target } from '../support/targets';
import { startTicketProxy, type TicketProxy } from '../../test/tickets/support/ticket-kit';
import { runReturningClients, type MixResult } from './returning-clients';

export const BENCH_TICKET_SCOPE = 'bench';
const CONFIGS = ['unshared', 'shared'] as const;
type Config = (typeof CONFIGS)[number];

export interface ResumptionSample extends MixResult {
  signatures: number;
}

export interface ResumptionBenchResult {
  connectionsPerRound: number;
  concurrency: number;
  samples: Record<Config, ResumptionSample[]>;
}

/** Signatures the gateway has made so far. */
async function signatureCount(gateway: GatewayProcess): Promise<number> {
  const text = await gateway.metricsText();
  let total = 0;
  for (const m of text.matchAll(/^hsmgw_sign_requests_total\{[^}]*code="OK"[^}]*\} (\S+)$/gm)) total += Number(m[1]);
  return total;
}

export async function runResumptionBench(options: { gateway: GatewayProcess; quick: boolean; log: (line: string) => void }): Promise<ResumptionBenchResult> {
  const { gateway, quick, log } = options;
  const env = gateway.env;
  const clientOptions = {
    endpoints: [gateway.endpoint], serverName: 'localhost',
    ca: fs.readFileSync(env.pki.ca, 'utf8'), cert: fs.readFileSync(env.pki.clients.dev.cert, 'utf8'), key: fs.readFileSync(env.pki.clients.dev.key, 'utf8'),
  };
  const proxies: Record<Config, TicketProxy[]> = {
    unshared: await Promise.all([startTicketProxy(clientOptions), startTicketProxy(clientOptions)]),
    shared: await Promise.all([startTicketProxy(clientOptions, { scope: BENCH_TICKET_SCOPE }), startTicketProxy(clientOptions, { scope: BENCH_TICKET_SCOPE })]),
  };
  const ca = fs.readFileSync(proxies.unshared[0].certFile, 'utf8');
  const connections = quick ? 200 : 1000;
  const concurrency = 8;
  const rounds = quick ? 1 : 3;
  const samples: Record<Config, ResumptionSample[]> = { unshared: [], shared: [] };
  try {
    for (let r = 0; r < rounds; r++) {
      // Interleaved, alternating which goes first: drift on a noisy machine hits both alike.
      for (const config of r % 2 === 0 ? CONFIGS : [...CONFIGS].reverse()) {
        let before = 0;
        const mix = await runReturningClients(proxies[config].map((p) => p.port), ca, connections, concurrency, async () => { before = await signatureCount(gateway); });
        const signatures = (await signatureCount(gateway)) - before;
        samples[config].push({ ...mix, signatures });
        log(`bench: resumption ${config} round ${r + 1}: ${mix.connections} connections, ${mix.resumed} resumed, ${signatures} remote signatures, ${(mix.connections / mix.seconds).toFixed(0)}/s`);
      }
    }
  } finally {
    await Promise.all([...proxies.unshared, ...proxies.shared].map((p) => p.stop()));
  }
  return { connectionsPerRound: connections, concurrency, samples };
}

interface Derived {
  signaturesPer1000: Spread;
  resumedShare: Spread;
  rate: Spread;
  failures: number;
}

function derive(samples: ResumptionSample[]): Derived {
  return {
    signaturesPer1000: spread(samples.map((s) => (s.signatures / s.connections) * 1000)),
    resumedShare: spread(samples.map((s) => s.resumed / s.connections)),
    rate: spread(samples.map((s) => s.connections / s.seconds)),
    failures: samples.reduce((sum, s) => sum + s.failures, 0),
  };
}

export function resumptionReport(result: ResumptionBenchResult): { text: string; targets: Target[] } {
  const d = { unshared: derive(result.samples.unshared), shared: derive(result.samples.shared) };
  const rows = CONFIGS.map((c) => [c, fmtSpread(d[c].signaturesPer1000), fmtSpread(d[c].resumedShare, 1, 0.01), fmtSpread(d[c].rate), String(d[c].failures)]);
  const sigRatio = d.shared.signaturesPer1000.median / d.unshared.signaturesPer1000.median;
  const rateRatio = d.shared.rate.median / d.unshared.rate.median;
  const text = [
    `2 keyless proxies (Node ${process.version}, default keyless mode), clients alternating between them, 90 % returning; ${result.connectionsPerRound} TLS 1.3 connections per round, ${result.concurrency} at a time; medians (min-max) of ${result.samples.shared.length} interleaved round(s).`,
    '',
    markdownTable(['ticket keys', 'remote signatures / 1,000 connections', 'resumed %', 'handshakes/s', 'failures'], rows),
    '',
    `- shared / unshared: remote signatures ${sigRatio.toFixed(3)}x, handshake rate ${rateRatio.toFixed(2)}x`,
  ].join('\n');
  const failures = d.shared.failures + d.unshared.failures;
  const targets: Target[] = [{
    name: 'shared ticket keys cut remote signatures to <= 0.25x of unshared (2 proxies, 90 % returning clients)',
    met: failures === 0 && sigRatio <= 0.25,
    value: `${sigRatio.toFixed(3)}x (${round(d.shared.signaturesPer1000.median)} vs ${round(d.unshared.signaturesPer1000.median)} per 1,000)${failures ? `, ${failures} failed connections` : ''}`,
  }];
  return { text, targets };
}
