// `hsm-gateway cert`: its two subcommands are of the two kinds, one on the token, one through a gateway.
import { EXIT_CODES_HELP, EXIT_OK, UsageError, runCommand } from './command-support';

export const CERT_HELP = `Usage: hsm-gateway cert <install|self-sign> [options]

  install     store a certificate chain on the token with its key (direct PKCS#11, gateway host)
  self-sign   make a self-signed certificate for a key, signed through the gateway (development)

Run "hsm-gateway cert <subcommand> --help" for its options.
${EXIT_CODES_HELP}`;

/** `hsm-gateway cert install|self-sign`. */
export async function certCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  switch (sub) {
    case 'install': return runCommand('cert install', rest, async () => (await import('./token/cert-install-command.js')).certInstallCommand(rest));
    case 'self-sign': return runCommand('cert self-sign', rest, async () => (await import('./gateway/cert-self-sign-command.js')).certSelfSignCommand(rest));
    case '-h': case '--help': case 'help':
      process.stdout.write(`${CERT_HELP}\n`);
      return EXIT_OK;
    default:
      return runCommand('cert', argv, () => Promise.reject(new UsageError(sub === undefined ? 'a subcommand is required' : `unknown subcommand "${sub}"`)));
  }
}
