/**
 * The file formats other TLS servers read session-ticket keys from.
 *
 * nginx (`ssl_session_ticket_key FILE`, repeatable): 80 raw bytes per file for AES-256 tickets,
 * name 16 | HMAC key 32 | AES key 32; the first directive's key encrypts, all decrypt.
 *
 * HAProxy (`tls-ticket-keys FILE`): one base64 line per key, 80 bytes for AES-256, laid out
 * name 16 | AES key 32 | HMAC key 32 (its struct tls_sess_key_256); of the last three lines
 * (TLS_TICKETS_NO, default 3) the penultimate encrypts and all three decrypt.
 */
import type { TicketKeySetView } from './ticket-key-stream';

type Key = TicketKeySetView['keys'][number];

export interface KeyFile {
  name: string;
  content: Buffer;
}

/** Keys by role at `nowSeconds`: current (encrypts), next (announced), previous (newest first). */
export function keysByRole(set: TicketKeySetView, nowSeconds: number): { current: Key; next: Key | undefined; previous: Key[] } {
  const current = set.keys.find((k) => k.notBefore <= nowSeconds && nowSeconds < k.encryptUntil);
  if (!current) throw new Error(`the key set of scope "${set.scope}" has no key for now (clock skew?)`);
  const next = set.keys.find((k) => k.epoch === current.epoch + 1);
  const previous = set.keys.filter((k) => k.epoch < current.epoch && k.decryptUntil > nowSeconds).sort((a, b) => b.epoch - a.epoch);
  return { current, next, previous };
}

export const NGINX_SNIPPET = 'ticket-keys.conf';

/** nginx key files (current.key first in the snippet) and a snippet of directives to `include`. */
export function nginxFiles(set: TicketKeySetView, nowSeconds: number, dir: string): KeyFile[] {
  const { current, next, previous } = keysByRole(set, nowSeconds);
  const keys: Array<[string, Key]> = [['current.key', current], ...previous.map((k, i): [string, Key] => [`previous-${i + 1}.key`, k])];
  if (next) keys.push(['next.key', next]);
  const files = keys.map(([name, k]) => ({ name, content: Buffer.concat([k.name, k.hmacKey, k.aesKey]) }));
  const snippet = `# scope ${set.scope}, epoch ${current.epoch}: written by hsm-gateway ticket-keys; the first key encrypts\n`
    + files.map((f) => `ssl_session_ticket_key ${dir}/${f.name};\n`).join('');
  return [...files, { name: NGINX_SNIPPET, content: Buffer.from(snippet) }];
}

export const HAPROXY_FILE = 'tls-ticket-keys';

/** HAProxy's key file: previous, current (the penultimate line encrypts), next. */
export function haproxyFiles(set: TicketKeySetView, nowSeconds: number): KeyFile[] {
  const { current, next, previous } = keysByRole(set, nowSeconds);
  // Exactly three lines: HAProxy reads the last three, so the current key must be the penultimate.
  const lines = [previous[0] ?? current, current, next ?? current];
  const content = lines.map((k) => Buffer.concat([k.name, k.aesKey, k.hmacKey]).toString('base64')).join('\n');
  return [{ name: HAPROXY_FILE, content: Buffer.from(`${content}\n`) }];
}
