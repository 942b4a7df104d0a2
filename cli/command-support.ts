/**
 * What every command shares: exit codes, error reporting (text on stderr,
 * and a JSON object on stdout with --json), argument parsing that reports usage errors, and the
 * admin --config option.
 */
import { parseArgs } from 'node:util';
import { errorMessage } from '../common/errors';
import { GatewayClientError } from '../client/gateway-client-error';
import { ConfigError } from '../server/config/config-error';
import { defaultAdminConfigFile } from '../server/lifecycle/admin-token';

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;
export const EXIT_REFUSED = 3;

export const EXIT_CODES_HELP = 'Exit codes: 0 ok, 1 failure (including gateway unreachable), 2 usage or configuration error,\n3 the gateway refused the call (PERMISSION_DENIED, NOT_FOUND, INVALID_ARGUMENT...).';

export const ADMIN_OPTIONS_HELP = `Admin options (direct PKCS#11: run on the gateway host):
  --config FILE   the gateway's config file: module, token and PIN source (pkcs11.pin.file or
                  pkcs11.pin.env) are read from it; the PIN is never taken on the command line.
                  Default: HSMGW_CONFIG, else the embedded default's config.yaml in
                  HSMGW_STATE_DIR (.hsm-gateway/)
  --json          machine-readable output`;

/** Bad flags or arguments: exit code 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** A refusal or failure with a stable `reason` for scripts (exit code 1 unless given). */
export class CommandError extends Error {
  override readonly name = 'CommandError';

  constructor(message: string, readonly reason: string, readonly exitCode = EXIT_FAILURE) {
    super(message);
  }
}

export function writeJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

type OptionSpec = Record<string, { type: 'string' | 'boolean'; multiple?: boolean; short?: string }>;

/** parseArgs (strict, no positionals) with its errors turned into UsageError. */
export function parseFlags<T extends OptionSpec>(argv: string[], options: T): ReturnType<typeof parseArgs<{ args: string[]; options: T; allowPositionals: false }>>['values'] {
  try {
    return parseArgs({ args: argv, options, allowPositionals: false }).values;
  } catch (err) {
    throw new UsageError(errorMessage(err));
  }
}

export function adminConfigFile(flag: string | undefined): string {
  return flag ?? defaultAdminConfigFile();
}

/**
 * Runs a command body and maps what it throws to an exit code, with one line on stderr and, with
 * --json, `{"error": ..., "reason": ..., "exitCode": ...}` on stdout.
 */
export async function runCommand(command: string, argv: string[], body: () => Promise<number>): Promise<number> {
  const json = argv.includes('--json');
  const fail = (exitCode: number, reason: string, message: string, extra: Record<string, unknown> = {}): number => {
    process.stderr.write(`hsm-gateway ${command}: ${message}\n`);
    if (exitCode === EXIT_USAGE && reason === 'usage' && !json) process.stderr.write(`Run "hsm-gateway ${command} --help" for usage.\n`);
    if (json) writeJson({ error: message, reason, exitCode, ...extra });
    return exitCode;
  };
  try {
    return await body();
  } catch (err) {
    const failure = failureOf(err);
    return fail(failure.exitCode, failure.reason, failure.message, failure.extra);
  }
}

/**
 * The one mapping from what a command throws to its exit code and reason: usage and configuration
 * errors 2; a gateway that answered no 3 (PERMISSION_DENIED, NOT_FOUND, INVALID_ARGUMENT...); a
 * gateway not reached or failing (UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL...) and anything else 1.
 */
export function failureOf(err: unknown): { exitCode: number; reason: string; message: string; extra?: Record<string, unknown> } {
  if (err instanceof UsageError) return { exitCode: EXIT_USAGE, reason: 'usage', message: err.message };
  if (err instanceof TypeError && String((err as NodeJS.ErrnoException).code).startsWith('ERR_PARSE_ARGS')) return { exitCode: EXIT_USAGE, reason: 'usage', message: err.message };
  if (err instanceof ConfigError) return { exitCode: EXIT_USAGE, reason: 'config', message: err.message };
  if (err instanceof GatewayClientError) {
    // Not reaching the gateway is a failure; an answer that says no is a refusal.
    const unreachable = ['UNAVAILABLE', 'DEADLINE_EXCEEDED', 'UNKNOWN', 'INTERNAL', 'CANCELLED'].includes(err.codeName);
    return { exitCode: unreachable ? EXIT_FAILURE : EXIT_REFUSED, reason: unreachable ? 'gateway-unreachable' : 'gateway-refused', message: err.message, extra: { grpcCode: err.codeName } };
  }
  if (err instanceof CommandError) return { exitCode: err.exitCode, reason: err.reason, message: err.message };
  return { exitCode: EXIT_FAILURE, reason: 'error', message: errorMessage(err) };
}
