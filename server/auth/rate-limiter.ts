import type { AuthorizationRule, RateLimitConfig } from '../config/gateway-config';

/** An exact name, or a prefix ending in `*` (the rule syntax). */
function matches(pattern: string, value: string): boolean {
  return pattern.endsWith('*') ? value.startsWith(pattern.slice(0, -1)) : pattern === value;
}

interface Bucket { tokens: number; updatedAt: number; limit: RateLimitConfig }

export type RateDecision = { allowed: true } | { allowed: false; retryAfterMs: number; limit: RateLimitConfig };

/**
 * A token bucket per caller identity. The limit comes from the first authorization rule matching
 * the identity that sets `rateLimit`; identities without one are not limited.
 */
export class RateLimiter {
  private readonly buckets = new Map<string, Bucket | null>();

  constructor(private readonly rules: AuthorizationRule[], private readonly maxIdentities = 100_000) {}

  private bucketFor(identity: string, now: number): Bucket | null {
    const existing = this.buckets.get(identity);
    if (existing !== undefined) return existing;
    const rule = this.rules.find((r) => r.rateLimit && matches(r.identity, identity));
    const bucket = rule?.rateLimit ? { tokens: rule.rateLimit.burst, updatedAt: now, limit: rule.rateLimit } : null;
    if (this.buckets.size >= this.maxIdentities) this.buckets.clear();
    this.buckets.set(identity, bucket);
    return bucket;
  }

  take(identity: string, now = performance.now()): RateDecision {
    const bucket = this.bucketFor(identity, now);
    if (!bucket) return { allowed: true };
    const { perSecond, burst } = bucket.limit;
    bucket.tokens = Math.min(burst, bucket.tokens + ((now - bucket.updatedAt) / 1000) * perSecond);
    bucket.updatedAt = now;
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return { allowed: true };
    }
    return { allowed: false, retryAfterMs: Math.ceil(((1 - bucket.tokens) / perSecond) * 1000), limit: bucket.limit };
  }
}
