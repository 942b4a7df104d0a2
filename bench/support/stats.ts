/** Small statistics helpers: percentiles of latency samples and summaries across rounds. */

/** The p-th percentile (0..100) of sorted values, nearest-rank. */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank];
}

export interface Spread {
  median: number;
  min: number;
  max: number;
}

export function spread(values: number[]): Spread {
  const finite = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  if (finite.length === 0) return { median: NaN, min: NaN, max: NaN };
  const mid = finite.length >> 1;
  const median = finite.length % 2 ? finite[mid] : (finite[mid - 1] + finite[mid]) / 2;
  return { median, min: finite[0], max: finite[finite.length - 1] };
}

/** Latency recorder: microsecond samples in a growable typed array. */
export class LatencyRecorder {
  private samples = new Float64Array(1 << 14);
  private n = 0;

  add(micros: number): void {
    if (this.n === this.samples.length) {
      const bigger = new Float64Array(this.samples.length * 2);
      bigger.set(this.samples);
      this.samples = bigger;
    }
    this.samples[this.n++] = micros;
  }

  get count(): number {
    return this.n;
  }

  summary(): { p50: number; p99: number } {
    const sorted = this.samples.slice(0, this.n).sort();
    return { p50: percentile(sorted, 50), p99: percentile(sorted, 99) };
  }
}

export const round = (v: number, digits = 0): number => {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
};
