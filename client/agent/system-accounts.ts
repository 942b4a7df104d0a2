// User and group names to ids, from /etc/passwd and /etc/group (Node has no getpwnam).
import * as fs from 'node:fs';

function lookup(file: string, name: string): number | undefined {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  for (const line of text.split('\n')) {
    const fields = line.split(':');
    if (fields[0] === name && fields[2] !== undefined && /^\d+$/.test(fields[2])) return Number(fields[2]);
  }
  return undefined;
}

/** A numeric id, or the id of a user (`kind` 'user') or group name; throws naming what is unknown. */
export function accountId(kind: 'user' | 'group', value: string): number {
  if (/^\d+$/.test(value)) return Number(value);
  const id = lookup(kind === 'user' ? '/etc/passwd' : '/etc/group', value);
  if (id === undefined) throw new Error(`unknown ${kind} "${value}"`);
  return id;
}
