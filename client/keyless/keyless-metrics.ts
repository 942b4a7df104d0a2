// Per-process metrics of keyless signing, declared once, in one place.
// The addon records every sign attempt natively (the handshake thread cannot run
// JavaScript while it waits); samples are drained into prom-client before each
// scrape and every few seconds.
import type { Counter, Gauge, Histogram, Registry } from 'prom-client';

import type { PromClient } from '../optional-prom-client';

import type { NonBlockingStats, SignSample } from './keyless-addon';
import { latencyBuckets } from '../../common/latency-buckets';

/** Where the non-blocking mode's counters come from (native stats, JS refusals). */
export interface NonBlockingSources {
  stats: () => NonBlockingStats;
  refusals: () => ReadonlyMap<string, number>;
}

const DRAIN_INTERVAL_MS = 5000;

/** What a keyless bridge records; the prom-client-backed KeylessMetrics, or DrainOnlyMetrics without prom-client. */
export interface KeylessMetricsSink {
  /** The prom-client registry to mount (throws when prom-client is not installed). */
  readonly registry: Registry;
  recordBridge(mode: 'non-blocking' | 'blocking', delta: 1 | -1): void;
  recordWorkerExit(reason: string): void;
  collectSamples(): void;
}

/**
 * Without prom-client (an optional peer): the addon's samples are still drained (so they do not
 * pile up natively) and dropped; asking for the registry says what to install.
 */
export class DrainOnlyMetrics implements KeylessMetricsSink {
  constructor(private readonly drain: () => SignSample[], private readonly missing: () => Error) {
    setInterval(() => this.collectSamples(), DRAIN_INTERVAL_MS).unref();
  }

  get registry(): Registry {
    throw this.missing();
  }

  recordBridge(): void {}

  recordWorkerExit(): void {}

  collectSamples(): void {
    this.drain();
  }
}

export class KeylessMetrics implements KeylessMetricsSink {
  /** Mount this registry (e.g. merge it into the application's) to expose the metrics. */
  readonly registry: Registry;

  private readonly remoteSigns: Counter<'key'>;
  private readonly signDuration: Histogram<'key' | 'result'>;
  private readonly failures: Counter<'key' | 'reason'>;
  private readonly workerExits: Counter<'reason'>;
  private readonly bridges: Gauge<'mode'>;
  private readonly counted = new Map<string, number>();

  constructor(private readonly prom: PromClient, private readonly drain: () => SignSample[], nonBlocking?: NonBlockingSources) {
    const { Counter, Gauge, Histogram, Registry } = prom;
    this.registry = new Registry();
    const collect = (): void => this.collectSamples();
    this.remoteSigns = new Counter({
      name: 'hsmgw_keyless_remote_signs_total',
      help: 'Handshake signatures sent to the remote signer (one per full TLS handshake using a keyless key)',
      labelNames: ['key'],
      registers: [this.registry],
      collect,
    });
    this.signDuration = new Histogram({
      name: 'hsmgw_keyless_sign_duration_seconds',
      help: 'Time from the handshake asking for a remote signature to the answer: time the TLS thread was blocked (blocking path) or the handshake was paused (non-blocking mode)',
      labelNames: ['key', 'result'],
      buckets: latencyBuckets(),
      registers: [this.registry],
      collect,
    });
    this.failures = new Counter({
      name: 'hsmgw_keyless_sign_failures_total',
      help: 'Keyless signatures that failed the handshake, by reason (timeout, signer_error, worker_dead, no_signer, signer_thread, unsupported, bad_signature, cancelled)',
      labelNames: ['key', 'reason'],
      registers: [this.registry],
      collect,
    });
    this.workerExits = new Counter({
      name: 'hsmgw_keyless_signer_worker_exits_total',
      help: 'Signer worker threads that stopped unexpectedly (each is restarted)',
      labelNames: ['reason'],
      registers: [this.registry],
    });
    this.bridges = new Gauge({
      name: 'hsmgw_keyless_bridges',
      help: 'Keyless bridges started in this process, by the mode they got (non-blocking, or blocking: asked for or after a failed self-check)',
      labelNames: ['mode'],
      registers: [this.registry],
    });
    setInterval(collect, DRAIN_INTERVAL_MS).unref();
    if (nonBlocking !== undefined) this.declareNonBlocking(nonBlocking);
  }

  /** Counters of the non-blocking mode; read from their sources on each scrape. */
  private declareNonBlocking(sources: NonBlockingSources): void {
    const { Counter, Gauge } = this.prom;
    // Native counters only grow: each scrape adds what is new since the last one.
    const add = (counter: Counter<string>, name: string, value: number, labels: Record<string, string> = {}): void => {
      const key = `${name}/${JSON.stringify(labels)}`;
      const delta = value - (this.counted.get(key) ?? 0);
      this.counted.set(key, value);
      counter.inc(labels, delta > 0 ? delta : 0);
    };
    const paused: Counter<string> = new Counter({
      name: 'hsmgw_keyless_async_jobs_paused_total',
      help: 'Handshake jobs paused while their remote signature was in flight (non-blocking mode; the event loop kept running)',
      registers: [this.registry],
      collect: () => add(paused, 'paused', sources.stats().paused),
    });
    const resumed: Counter<string> = new Counter({
      name: 'hsmgw_keyless_async_jobs_resumed_total',
      help: 'Paused handshake jobs resumed from the main loop with their answer, error or timeout (not counting cancelled ones)',
      registers: [this.registry],
      collect: () => add(resumed, 'resumed', sources.stats().resumed),
    });
    const cancelled: Counter<string> = new Counter({
      name: 'hsmgw_keyless_async_jobs_cancelled_total',
      help: 'Paused handshake jobs unwound because their connection was destroyed before the answer',
      registers: [this.registry],
      collect: () => add(cancelled, 'cancelled', sources.stats().cancelled),
    });
    new Gauge({
      name: 'hsmgw_keyless_async_jobs_paused',
      help: 'Handshake jobs paused right now, waiting for a remote signature',
      registers: [this.registry],
      collect() {
        this.set(sources.stats().pausedNow);
      },
    });
    const signatures: Counter<string> = new Counter({
      name: 'hsmgw_keyless_nonblocking_signatures_total',
      help: 'Signatures with keys of non-blocking bridges, by mode: async (handshake paused) or blocking (fallback: ' +
        'client connections, renegotiation, connections kept blocking by a guard)',
      labelNames: ['mode'],
      registers: [this.registry],
      collect: () => {
        const stats = sources.stats();
        add(signatures, 'signatures', stats.asyncSigns, { mode: 'async' });
        add(signatures, 'signatures', stats.blockingSigns, { mode: 'blocking' });
      },
    });
    const refused: Counter<string> = new Counter({
      name: 'hsmgw_keyless_nonblocking_refused_connections_total',
      help: 'Server connections kept blocking by a guard, by reason (alpn_callback, psk_callback, internals_missing)',
      labelNames: ['reason'],
      registers: [this.registry],
      collect: () => {
        for (const [reason, count] of sources.refusals()) add(refused, 'refused', count, { reason });
      },
    });
  }

  /** A bridge started (+1) or closed (-1). */
  recordBridge(mode: 'non-blocking' | 'blocking', delta: 1 | -1): void {
    this.bridges.inc({ mode }, delta);
  }

  recordWorkerExit(reason: string): void {
    this.workerExits.inc({ reason });
  }

  /** Moves the addon's samples into the metrics. Safe to call at any time. */
  collectSamples(): void {
    for (const [key, outcome, seconds] of this.drain()) {
      if (seconds >= 0) {
        this.remoteSigns.inc({ key });
        this.signDuration.observe({ key, result: outcome === 'ok' ? 'ok' : 'error' }, seconds);
      }
      if (outcome !== 'ok') this.failures.inc({ key, reason: outcome });
    }
  }
}
