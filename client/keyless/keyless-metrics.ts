// Per-process metrics of keyless signing, declared once, in one place.
// The addon records every sign attempt natively (the handshake thread cannot run
// JavaScript while it waits); samples are drained into prom-client before each
// scrape and every few seconds.
import { Counter, Histogram, Registry } from 'prom-client';

import { SIGN_OUTCOMES, type SignSample } from './keyless-addon';

/** 100 us doubling to ~6.5 s: sized for HSM operations plus a network round trip. */
const LATENCY_BUCKETS = Array.from({ length: 17 }, (_, i) => 0.0001 * 2 ** i);
const DRAIN_INTERVAL_MS = 5000;

export class KeylessMetrics {
  /** Mount this registry (e.g. merge it into the application's) to expose the metrics. */
  readonly registry = new Registry();

  private readonly remoteSigns: Counter<'key'>;
  private readonly signDuration: Histogram<'key' | 'result'>;
  private readonly failures: Counter<'key' | 'reason'>;
  private readonly workerExits: Counter<'reason'>;

  constructor(private readonly drain: () => SignSample[]) {
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
      help: 'Time the TLS thread was blocked waiting for a remote signature, including the worker queue',
      labelNames: ['key', 'result'],
      buckets: LATENCY_BUCKETS,
      registers: [this.registry],
      collect,
    });
    this.failures = new Counter({
      name: 'hsmgw_keyless_sign_failures_total',
      help: 'Keyless signatures that failed the handshake, by reason (timeout, signer_error, worker_dead, no_signer, signer_thread, unsupported, bad_signature)',
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
    setInterval(collect, DRAIN_INTERVAL_MS).unref();
  }

  recordWorkerExit(reason: string): void {
    this.workerExits.inc({ reason });
  }

  /** Moves the addon's samples into the metrics. Safe to call at any time. */
  collectSamples(): void {
    for (const [key, outcome, seconds] of this.drain()) {
      const reason = SIGN_OUTCOMES[outcome] ?? 'unknown';
      if (seconds >= 0) {
        this.remoteSigns.inc({ key });
        this.signDuration.observe({ key, result: reason === 'ok' ? 'ok' : 'error' }, seconds);
      }
      if (reason !== 'ok') this.failures.inc({ key, reason });
    }
  }
}
