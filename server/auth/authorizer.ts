import type { SignatureAlgorithm } from '../../proto/generated/hsmgateway/v1/signer';
import type { AuthorizationRule } from '../config/gateway-config';
import { algorithmByName } from '../../common/algorithms';
import { identityMatches, parseIdentityPattern, type IdentityPattern } from './identity-pattern';
import { namePatternMatches } from './name-pattern';
import type { PeerIdentity } from './peer-identity';

export interface KeyGrant {
  /** Algorithms granted, or 'any' for every algorithm the key supports. */
  algorithms: Set<SignatureAlgorithm> | 'any';
}

/**
 * Deny-by-default authorization: an identity may use a key only if some rule matches both, and
 * then only the union of the algorithms those rules list.
 */
export class Authorizer {
  private readonly patterns: ReadonlyArray<{ rule: AuthorizationRule; identity: IdentityPattern }>;
  private readonly rulesByIdentity = new Map<string, AuthorizationRule[]>();
  private readonly grants = new Map<string, KeyGrant | null>();

  constructor(rules: AuthorizationRule[]) {
    this.patterns = rules.map((rule) => ({ rule, identity: parseIdentityPattern(rule.identity) }));
  }

  private rulesFor(identity: PeerIdentity): AuthorizationRule[] {
    let r = this.rulesByIdentity.get(identity.key);
    if (!r) {
      r = this.patterns.filter((p) => identityMatches(p.identity, identity)).map((p) => p.rule);
      if (this.rulesByIdentity.size > 10_000) this.rulesByIdentity.clear();
      this.rulesByIdentity.set(identity.key, r);
    }
    return r;
  }

  /** The grant for identity × key name, or null when denied. Cached: rules are immutable. */
  grant(identity: PeerIdentity, keyName: string): KeyGrant | null {
    const cacheKey = `${identity.key}\u0000${keyName}`;
    const cached = this.grants.get(cacheKey);
    if (cached !== undefined) return cached;
    let grant: KeyGrant | null = null;
    for (const rule of this.rulesFor(identity)) {
      if (!rule.keys.some((k) => namePatternMatches(k, keyName))) continue;
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

  /** True when some rule matching the identity grants the session-ticket key scope. */
  ticketScopeAllowed(identity: PeerIdentity, scope: string): boolean {
    return this.rulesFor(identity).some((rule) => rule.ticketKeyScopes.some((s) => namePatternMatches(s, scope)));
  }

  allows(grant: KeyGrant, algorithm: SignatureAlgorithm): boolean {
    return grant.algorithms === 'any' || grant.algorithms.has(algorithm);
  }
}
