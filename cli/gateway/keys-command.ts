import { parseArgs } from 'node:util';
import { CLIENT_FLAG_SPEC, CLIENT_OPTIONS_HELP, clientFromFlags } from './client-options';

export const KEYS_HELP = `Usage: hsm-gateway keys [options]

Lists the keys this client may use, through a running gateway.
${CLIENT_OPTIONS_HELP}`;

export async function keysCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: CLIENT_FLAG_SPEC });
  if (values.help) {
    process.stdout.write(`${KEYS_HELP}\n`);
    return 0;
  }
  const client = clientFromFlags(values);
  try {
    const keys = await client.listKeys();
    if (values.json) {
      process.stdout.write(`${JSON.stringify(keys.map((k) => ({
        name: k.name, type: k.type, bits: k.bits, curve: k.curve, algorithms: k.algorithms,
        publicKey: k.publicKey.toString('base64'), certificates: k.certificateChain.length,
      })))}\n`);
    } else {
      for (const k of keys) {
        process.stdout.write(`${k.name}\t${k.type}${k.curve ? ` ${k.curve}` : ` ${k.bits}`}\t${k.algorithms.join(',')}\t${k.certificateChain.length} certificate(s)\n`);
      }
    }
    return 0;
  } finally {
    client.close();
  }
}
