/**
 * `hsm-gateway keyless-pem --key NAME`: the keyless key PEM and the certificate chain stored on
 * the token for a key, ready for nginx's ssl_certificate_key/ssl_certificate and for HAProxy.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { X509Certificate } from 'node:crypto';
import { encodeKeylessKeyPem } from '../../client/keyless/keyless-key-pem';
import { CLIENT_FLAG_SPEC, CLIENT_OPTIONS_HELP, clientFromFlags } from './client-options';
import { CommandError, EXIT_OK, UsageError, parseFlags, runCommand, writeJson } from '../command-support';
import { writePemFile } from '../../common/pem-file';

/** The bridge id written in PEMs for the standalone provider, which signs through the agent. */
export const AGENT_BRIDGE_ID = 'agent';

export const KEYLESS_PEM_HELP = `Usage: hsm-gateway keyless-pem --key NAME [--out DIR] [options]

Writes, for nginx and HAProxy with the hsm-gateway provider (docs/KEYLESS-AGENT.md):
  DIR/NAME.key       the keyless key PEM (names the key, carries its public key, holds no secret)
  DIR/NAME.crt       the certificate chain stored on the token, leaf first
  DIR/NAME.pem       both, certificate first (HAProxy's crt file)
  --key NAME         the key's name in the gateway (this client must be allowed to use it)
  --out DIR          default: the current directory
${CLIENT_OPTIONS_HELP}`;

export async function keylessPemCommand(argv: string[]): Promise<number> {
  return runCommand('keyless-pem', argv, async () => {
    const values = parseFlags(argv, { ...CLIENT_FLAG_SPEC, key: { type: 'string' }, out: { type: 'string', short: 'o' } });
    if (values.help) {
      process.stdout.write(`${KEYLESS_PEM_HELP}\n`);
      return EXIT_OK;
    }
    if (values.key === undefined) throw new UsageError('--key is required');
    const outDir = path.resolve(values.out ?? '.');
    if (!fs.existsSync(outDir) || !fs.statSync(outDir).isDirectory()) throw new UsageError(`--out: ${outDir} is not a directory`);
    const client = clientFromFlags(values);
    try {
      const info = await client.getKey(values.key, { refresh: true });
      if (info.certificateChain.length === 0) {
        throw new CommandError(`key "${values.key}" has no certificate on the token; install one first (hsm-gateway cert install)`, 'no-certificate');
      }
      const chain = info.certificateChain.map((der) => new X509Certificate(der).toString()).join('');
      const keyPem = encodeKeylessKeyPem(AGENT_BRIDGE_ID, values.key, info.publicKey);
      const files = { key: path.join(outDir, `${values.key}.key`), crt: path.join(outDir, `${values.key}.crt`), pem: path.join(outDir, `${values.key}.pem`) };
      // Not secret, but read by the server's workers only: 0640.
      writePemFile(files.key, keyPem, 0o640);
      writePemFile(files.crt, chain, 0o644);
      writePemFile(files.pem, chain + keyPem, 0o640);
      if (values.json) writeJson({ key: values.key, files, certificates: info.certificateChain.length });
      else process.stdout.write(`wrote ${files.key}, ${files.crt} and ${files.pem} (${info.certificateChain.length} certificate(s))\n`);
      return EXIT_OK;
    } finally {
      client.close();
    }
  });
}
