import { parseArgs } from 'node:util';
import { GatewayClientError } from '../../client/gateway-client-error';

const HELP = `hsm-gateway: a remote-signing gateway for TLS private keys held in an HSM.

Usage: hsm-gateway <command> [options]

Commands:
  serve   run the gateway (embedded SoftHSM2 default unless --config is given)
  sign    sign a digest or file through a running gateway
  keys    list the keys this client may use
  csr     write a PKCS#10 request signed by an HSM key (through the gateway)
  cert    install a certificate chain on the token; self-sign a certificate
  key     generate keys in the token; list the token's keys (direct PKCS#11, gateway host)
  agent   the local signing agent of nginx and HAProxy (keyless provider)
  keyless-pem  write the keyless key PEM and certificate chain of a key, for nginx and HAProxy

Run "hsm-gateway <command> --help" for a command's options.

Exit codes: 0 ok, 1 failure, 2 usage or configuration error, 3 the gateway refused the call.`;

/** Entry point of the CLI; returns the process exit code. */
export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      // Each command loads only its own modules: a client command never pays for the gateway.
      case 'serve': {
        const { SERVE_HELP, serveCommand } = await import('./serve-command.js');
        const { values } = parseArgs({ args: rest, options: { config: { type: 'string', short: 'c' }, 'sign-threads': { type: 'string' }, help: { type: 'boolean', short: 'h' } } });
        if (values.help) {
          process.stdout.write(`${SERVE_HELP}\n`);
          return 0;
        }
        // The flag is the HSMGW_SIGN_THREADS override: it applies again on every config reload.
        if (values['sign-threads'] !== undefined) process.env.HSMGW_SIGN_THREADS = values['sign-threads'];
        return await serveCommand(values.config);
      }
      case 'sign': return await (await import('./sign-command.js')).signCommand(rest);
      case 'keys': return await (await import('./keys-command.js')).keysCommand(rest);
      case 'key': return await (await import('./key-command.js')).keyCommand(rest);
      case 'cert': return await (await import('./cert-command.js')).certCommand(rest);
      case 'csr': return await (await import('./csr-command.js')).csrCommand(rest);
      case 'agent': return await (await import('./agent-command.js')).agentCommand(rest);
      case 'keyless-pem': return await (await import('./keyless-pem-command.js')).keylessPemCommand(rest);
      case undefined: case '-h': case '--help': case 'help':
        process.stdout.write(`${HELP}\n`);
        return command === undefined ? 2 : 0;
      default:
        process.stderr.write(`hsm-gateway: unknown command "${command}"\n\n${HELP}\n`);
        return 2;
    }
  } catch (err) {
    if (err instanceof GatewayClientError) {
      process.stderr.write(`hsm-gateway ${command}: ${err.message}\n`);
      return 3;
    }
    if (err instanceof TypeError && /ERR_PARSE_ARGS/.test(String((err as NodeJS.ErrnoException).code))) {
      process.stderr.write(`hsm-gateway ${command}: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
}
