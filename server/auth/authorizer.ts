import type { SignatureAlgorithm } from '../../proto/generated/hsmgateway/v1/signer';
import type { AuthorizationRule } from '../config/gateway-config';
import { algorithmByName } from '../signing/algorithms';

/** An exact name, or a prefix ending in `*`. */
function matches(pattern: string, value: string): boolean {
  return pattern.endsWith('*') ? value.startsWith(pattern.slice(0, -1)) : pattern === value;
}

export interface KeyGrant {
  /** Algorithms granted, or 'any' for every algorithm the key supports. */
  algorithms: Set<SignatureAlgorithm> | 'any';
}

/**
 * Deny-by-default authorization: an identity may use a key only if some rule matches both, and
 * then only the union of the algorithms those rules list.
 */
export class Authorizer {
  private readonly rulesByIdentity = new Map<string, AuthorizationRule[]>();
  private readonly grants = new Map<string, KeyGrant | null>();

  constructor(private readonly rules: AuthorizationRule[]) {}

  private rulesFor(identity: string): AuthorizationRule[] {
    let r = this.rulesByIdentity.get(identity);
    if (!r) {
      r = this.rules.filter((rule) => matches(rule.identity, identity));
      if (this.rulesByIdentity.size > 10_000) this.rulesByIdentity.clear();
      this.rulesByIdentity.set(identity, r);
    }
    return r;
  }

  /** The grant for identity × key name, or null when denied. Cached: rules are immutable. */
  grant(identity: string, keyName: string): KeyGrant | null {
    const cacheKey = `${identity}\u0000${keyName}`;
    const cached = this.grants.get(cacheKey);
    if (cached !== undefined) return cached;
    let grant: KeyGrant | null = null;
    for (const rule of this.rulesFor(identity)) {
      if (!rule.keys.some((k) => matches(k, keyName))) continue;
      if (rule.algorithms.length === 0) {
        grant = { algorithms: 'any' };
        break;
      }
      const set: Set<SignatureAlgorithm> = grant !== null && grant.algorithms instanceof Set ? grant.algorithms : new Set<SignatureAlgorithm>();
      for (const name of rule.algorithms) {
        const spec = algorithmByName(name);
        if (spec) set.add(spec.algorithm);
      }
      grant = { algorithms: set };
    }
    if (this.grants.size > 100_000) this.grants.clear();
    this.grants.set(cacheKey, grant);
    return grant;
  }

  allows(grant: KeyGrant, algorithm: SignatureAlgorithm): boolean {
    return grant.algorithms === 'any' || grant.algorithms.has(algorithm);
  }
}
