import type { IdentityType, PeerIdentity } from './peer-identity';
import { namePatternMatches } from './name-pattern';

/** A rule's `identity`, parsed: which kinds of identity it may match, and the name pattern. */
export interface IdentityPattern {
  readonly types: ReadonlySet<IdentityType>;
  /** An exact name, or a prefix followed by a trailing `*`. */
  readonly name: string;
}

const EXPLICIT_TYPES: readonly IdentityType[] = ['uri', 'dns', 'cn'];
const DNS_NAME = /^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$/;
/** What the start of a DNS name or of a URI scheme may contain. */
const DNS_OR_SCHEME_PREFIX = /^[A-Za-z0-9._+-]*$/;
const URI_OR_DNS: ReadonlySet<IdentityType> = new Set(['uri', 'dns']);

/**
 * Reads a rule identity. `uri:`, `dns:` and `cn:` say the kind explicitly; otherwise a value
 * with a colon is a URI (a DNS name has none), an exact value without one a DNS name, and a
 * wildcard without one (`*`, `proxy-*`) matches URIs and DNS names, as before types existed.
 * CN identities are matched only by `cn:` rules. Throws an Error saying why a value is refused.
 */
export function parseIdentityPattern(text: string): IdentityPattern {
  const star = text.indexOf('*');
  if (star !== -1 && star !== text.length - 1) throw new Error('a wildcard is allowed only as the last character');
  const explicit = EXPLICIT_TYPES.find((t) => text.startsWith(`${t}:`));
  if (explicit) {
    const name = text.slice(explicit.length + 1);
    if (name.length === 0) throw new Error(`"${text}" names no ${explicit} identity (write ${explicit}:NAME or ${explicit}:*)`);
    return { types: new Set([explicit]), name };
  }
  if (text.includes(':')) return { types: new Set(['uri']), name: text };
  const legacyCnOnly = `"${text}" is neither a URI nor a DNS name, so it could only ever match a certificate's subject CN; `
    + `CN identities are now matched only when a rule asks for them: write "cn:${text}"`;
  if (star !== -1) {
    if (!DNS_OR_SCHEME_PREFIX.test(text.slice(0, -1))) throw new Error(legacyCnOnly);
    return { types: URI_OR_DNS, name: text };
  }
  if (!DNS_NAME.test(text)) throw new Error(legacyCnOnly);
  return { types: new Set(['dns']), name: text };
}

export function identityMatches(pattern: IdentityPattern, identity: PeerIdentity): boolean {
  return pattern.types.has(identity.type) && namePatternMatches(pattern.name, identity.value);
}
