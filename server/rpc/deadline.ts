/**
 * The performance.now() time after which a request must not reach the HSM: the call's gRPC
 * deadline, capped by the configured request timeout (also the default when there is none).
 */
export function deadlineOf(call: { getDeadline(): Date | number }, defaultMs: number): number {
  const d = call.getDeadline();
  const ms = d instanceof Date ? d.getTime() : d;
  if (!Number.isFinite(ms)) return performance.now() + defaultMs;
  return performance.now() + Math.min(ms - Date.now(), defaultMs);
}
