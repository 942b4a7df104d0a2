/**
 * Names and addresses the gateway, its clients and its CLI all accept, each rule once: a key
 * name (also a token label) and a host:port listen or endpoint address.
 */

/** A key's name or CKA_LABEL: 1-128 letters, digits, ".", "_" or "-", starting with a letter or digit. */
export const KEY_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
export const KEY_NAME_RULE = '1-128 characters of letters, digits, ".", "_" or "-", starting with a letter or digit';

export function isKeyName(name: string): boolean {
  return KEY_NAME.test(name);
}

/** host:port ([v6]:port allowed), or undefined when `value` is not one. */
export function parseHostPort(value: string): { host: string; port: number } | undefined {
  const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(value);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) return undefined;
  return { host: m[1].replace(/^\[|\]$/g, ''), port };
}
