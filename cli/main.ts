// The hsm-gateway command. Its commands are of two kinds, one folder each: cli/token/ works on
// the HSM directly on the gateway host, cli/gateway/ talks to a running gateway as a client.
import { parseArgs } from 'node:util';
import { failureOf } from './command-support';

const HELP = `hsm-gateway: a remote-signing gateway for TLS private keys held in an HSM.

Usage: hsm-gateway <command> [options]

On the gateway host (the token itself; the PIN comes from the config, never argv):
  serve        run the gateway (embedded SoftHSM2 default unless --config is given)
  key          generate keys in the token; list the token's keys
  cert install store a certificate chain on the token with its key

Through a running gateway (as an mTLS client; no PIN):
  sign         sign a digest or file
  keys         list the keys this client may use
  csr          write a PKCS#10 request signed by an HSM key
  cert self-sign  write a self-signed certificate for an HSM key (development)
  keyless-pem  write the keyless key PEM and certificate chain of a key, for nginx and HAProxy
  agent        the local signing agent of nginx and HAProxy (keyless provider)
  ticket-keys  write a scope's session-ticket keys for nginx or HAProxy (once, or --watch)

Run "hsm-gateway <command> --help" for a command's options.

Exit codes: 0 ok, 1 failure, 2 usage or configuration error, 3 the gateway refused the call.`;

/** Entry point of the CLI; returns the process exit code. */
export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      // Each command loads only its own modules: a client command never pays for the gateway.
      case 'serve': {
        const { SERVE_HELP, serveCommand } = await import('./token/serve-command.js');
        const { values } = parseArgs({ args: rest, options: { config: { type: 'string', short: 'c' }, 'sign-threads': { type: 'string' }, help: { type: 'boolean', short: 'h' } } });
        if (values.help) {
          process.stdout.write(`${SERVE_HELP}\n`);
          return 0;
        }
        // The flag is the HSMGW_SIGN_THREADS override: it applies again on every config reload.
        if (values['sign-threads'] !== undefined) process.env.HSMGW_SIGN_THREADS = values['sign-threads'];
        return await serveCommand(values.config);
      }
      case 'sign': return await (await import('./gateway/sign-command.js')).signCommand(rest);
      case 'keys': return await (await import('./gateway/keys-command.js')).keysCommand(rest);
      case 'key': return await (await import('./token/key-command.js')).keyCommand(rest);
      case 'cert': return await (await import('./cert-command.js')).certCommand(rest);
      case 'csr': return await (await import('./gateway/csr-command.js')).csrCommand(rest);
      case 'agent': return await (await import('./gateway/agent-command.js')).agentCommand(rest);
      case 'keyless-pem': return await (await import('./gateway/keyless-pem-command.js')).keylessPemCommand(rest);
      case 'ticket-keys': return await (await import('./gateway/ticket-keys-command.js')).ticketKeysCommand(rest);
      case undefined: case '-h': case '--help': case 'help':
        process.stdout.write(`${HELP}\n`);
        return command === undefined ? 2 : 0;
      default:
        process.stderr.write(`hsm-gateway: unknown command "${command}"\n\n${HELP}\n`);
        return 2;
    }
  } catch (err) {
    // A command that did not report its own failure: the same mapping as runCommand's.
    const failure = failureOf(err);
    process.stderr.write(`hsm-gateway ${command}: ${failure.message}\n`);
    return failure.exitCode;
  }
}
