import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { haproxyFiles, nginxFiles, type KeyFile } from '../../client/ticket-keys/ticket-key-files';
import type { TicketKeySetView } from '../../client/ticket-keys/ticket-key-stream';
import { CLIENT_FLAG_SPEC, CLIENT_OPTIONS_HELP, clientOptionsFromFlags } from './client-options';
import { GatewayClient } from '../../client/gateway-client';
import { EXIT_CODES_HELP, EXIT_OK, UsageError, parseFlags, runCommand, writeJson } from '../command-support';

export const TICKET_KEYS_HELP = `Usage: hsm-gateway ticket-keys --scope SCOPE --format nginx|haproxy --out DIR [--watch]
                               [--notify-pidfile FILE [--notify-signal SIG]] [connection options]

Writes the scope's session-ticket keys (current, next and previous epochs), as the gateway serves
them, in the files nginx or HAProxy read. Files are written whole (rename), mode 0600.
  nginx     DIR/current.key (encrypts), previous-N.key, next.key: 80 bytes each, and
            DIR/ticket-keys.conf with their ssl_session_ticket_key lines: include it in the
            server block
  haproxy   DIR/tls-ticket-keys: previous, current, next (base64 lines): bind ... tls-ticket-keys

  --watch               keep running and rewrite the files at every rotation
  --notify-pidfile FILE after writing, signal the process in FILE (nginx: reload)
  --notify-signal SIG   the signal (default SIGHUP; HAProxy master-worker: SIGUSR2)

Without --watch it writes once and exits (for a timer: deploy/systemd/hsm-gateway-ticket-keys.*).
${CLIENT_OPTIONS_HELP}
${EXIT_CODES_HELP}`;

const FORMATS = { nginx: nginxFiles, haproxy: (set: TicketKeySetView, now: number) => haproxyFiles(set, now) } as const;
type Format = keyof typeof FORMATS;

/** Writes each file through a temporary name and a rename, so readers never see half a key. */
function writeAtomically(dir: string, files: KeyFile[]): void {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  for (const file of files) {
    const target = path.join(dir, file.name);
    const temporary = `${target}.tmp-${process.pid}`;
    fs.writeFileSync(temporary, file.content, { mode: 0o600 });
    fs.renameSync(temporary, target);
    file.content.fill(0);
  }
}

/** Key files of an earlier run that this set no longer has (e.g. fewer previous epochs). */
function removeStale(dir: string, kept: KeyFile[]): void {
  const names = new Set(kept.map((f) => f.name));
  for (const name of fs.readdirSync(dir)) {
    if (/^previous-\d+\.key$/.test(name) && !names.has(name)) fs.rmSync(path.join(dir, name));
  }
}

function notify(pidFile: string, signal: NodeJS.Signals): void {
  const pid = Number(fs.readFileSync(pidFile, 'utf8').trim());
  if (!Number.isInteger(pid) || pid <= 1) throw new Error(`--notify-pidfile ${pidFile}: no process id in it`);
  process.kill(pid, signal);
}

export async function ticketKeysCommand(argv: string[]): Promise<number> {
  return runCommand('ticket-keys', argv, async () => {
    const values = parseFlags(argv, {
      ...CLIENT_FLAG_SPEC, scope: { type: 'string' }, format: { type: 'string' }, out: { type: 'string' },
      watch: { type: 'boolean' }, 'notify-pidfile': { type: 'string' }, 'notify-signal': { type: 'string' },
    });
    if (values.help) {
      process.stdout.write(`${TICKET_KEYS_HELP}\n`);
      return EXIT_OK;
    }
    if (!values.scope || !values.format || !values.out) throw new UsageError('--scope, --format and --out are required');
    if (!(values.format in FORMATS)) throw new UsageError(`--format "${values.format}": use nginx or haproxy`);
    const signal = (values['notify-signal'] ?? 'SIGHUP').toUpperCase().replace(/^(?!SIG)/, 'SIG') as NodeJS.Signals;
    if (!(signal in os.constants.signals)) throw new UsageError(`--notify-signal "${values['notify-signal']}": not a signal name`);
    const format = FORMATS[values.format as Format];
    const dir = path.resolve(values.out);
    const client = new GatewayClient({ ...clientOptionsFromFlags(values), maxRetries: 0 });
    const write = (set: TicketKeySetView): void => {
      const files = format(set, Math.floor(Date.now() / 1000), dir);
      writeAtomically(dir, files);
      removeStale(dir, files);
      if (values['notify-pidfile']) notify(values['notify-pidfile'], signal);
      const epochs = set.keys.map((k) => k.epoch);
      if (values.json) writeJson({ scope: set.scope, format: values.format, dir, files: files.map((f) => f.name), epochs });
      else process.stdout.write(`wrote ${files.length} file(s) for scope "${set.scope}" (epochs ${Math.min(...epochs)}..${Math.max(...epochs)}) to ${dir}\n`);
    };
    try {
      let refusedAfterStart: Error | undefined;
      let writeError: Error | undefined;
      let stopWatching: () => void = () => undefined;
      const stopped = new Promise<void>((resolve) => { stopWatching = resolve; });
      const stream = client.watchTicketKeys(values.scope, {
        update: (set) => {
          try {
            write(set);
            writeError = undefined;
          } catch (err) {
            writeError = err as Error;
            process.stderr.write(`hsm-gateway ticket-keys: ${writeError.message}\n`);
          }
        },
        refused: (err) => { refusedAfterStart = err; stopWatching(); },
      });
      await stream.first();
      if (!values.watch || writeError) {
        stream.close();
        if (writeError) throw writeError;
        return EXIT_OK;
      }
      process.once('SIGTERM', stopWatching);
      process.once('SIGINT', stopWatching);
      await stopped;
      stream.close();
      if (refusedAfterStart) throw refusedAfterStart;
      return EXIT_OK;
    } finally {
      await client.close();
    }
  });
}
