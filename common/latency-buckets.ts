/**
 * Histogram buckets for a signature's latency: 100 µs doubling to ~6.5 s (an HSM operation plus
 * a network round trip). A fresh array per histogram: prom-client keeps the one it is given.
 */
export function latencyBuckets(): number[] {
  return Array.from({ length: 17 }, (_, i) => 0.0001 * 2 ** i);
}
