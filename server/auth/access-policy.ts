import type { AuthorizationRule } from '../config/gateway-config';
import { Authorizer } from './authorizer';
import { RateLimiter } from './rate-limiter';

/** Who may use which key, and how fast: built from the rules, replaced whole on reload. */
export class AccessPolicy {
  readonly authorizer: Authorizer;
  readonly rateLimiter: RateLimiter;

  /** `previous`: the policy being replaced, whose rate-limit buckets carry over where their rule is unchanged. */
  constructor(readonly rules: AuthorizationRule[], previous?: AccessPolicy) {
    this.authorizer = new Authorizer(rules);
    this.rateLimiter = new RateLimiter(rules, previous?.rateLimiter);
  }
}

/** The policy in force. Readers take `.current` per request, so a reload applies to the next one. */
export class AccessPolicyHolder {
  constructor(public current: AccessPolicy) {}
}
