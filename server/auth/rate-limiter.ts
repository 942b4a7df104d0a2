import type { AuthorizationRule, RateLimitConfig } from '../config/gateway-config';
import { identityMatches, parseIdentityPattern, type IdentityPattern } from './identity-pattern';
import type { PeerIdentity } from './peer-identity';

interface Bucket {
  identity: PeerIdentity;
  tokens: number;
  updatedAt: number;
  limit: RateLimitConfig;
  /** The rule the limit comes from (its identity and limit): a reload keeps the bucket while it is unchanged. */
  source: string;
}

export type RateDecision = { allowed: true } | { allowed: false; retryAfterMs: number; limit: RateLimitConfig };

type LimitedRule = AuthorizationRule & { rateLimit: RateLimitConfig };

interface CompiledLimit { rule: LimitedRule; identity: IdentityPattern; source: string }

const sourceOf = (rule: LimitedRule): string => `${rule.identity}\u0000${rule.rateLimit.perSecond}\u0000${rule.rateLimit.burst}`;

/**
 * A token bucket per caller identity. The limit comes from the first authorization rule matching
 * the identity that sets `rateLimit`; identities without one are not limited. A limiter built on
 * reload takes over the buckets whose rule did not change, so a reload never refills them.
 */
export class RateLimiter {
  private readonly limitedRules: CompiledLimit[];
  private readonly buckets = new Map<string, Bucket | null>();

  constructor(rules: AuthorizationRule[], previous?: RateLimiter, private readonly maxIdentities = 100_000) {
    this.limitedRules = rules
      .filter((r): r is LimitedRule => r.rateLimit !== undefined)
      .map((rule) => ({ rule, identity: parseIdentityPattern(rule.identity), source: sourceOf(rule) }));
    for (const [key, bucket] of previous?.buckets ?? []) {
      if (bucket && this.ruleFor(bucket.identity)?.source === bucket.source) this.buckets.set(key, bucket);
    }
  }

  private ruleFor(identity: PeerIdentity): CompiledLimit | undefined {
    return this.limitedRules.find((r) => identityMatches(r.identity, identity));
  }

  private bucketFor(identity: PeerIdentity, now: number): Bucket | null {
    const existing = this.buckets.get(identity.key);
    if (existing !== undefined) return existing;
    const applicable = this.ruleFor(identity);
    const bucket = applicable ? { identity, tokens: applicable.rule.rateLimit.burst, updatedAt: now, limit: applicable.rule.rateLimit, source: applicable.source } : null;
    if (this.buckets.size >= this.maxIdentities) this.buckets.clear();
    this.buckets.set(identity.key, bucket);
    return bucket;
  }

  take(identity: PeerIdentity, now = performance.now()): RateDecision {
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
