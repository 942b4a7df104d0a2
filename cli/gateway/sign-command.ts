import * as fs from 'node:fs';
import { parseArgs } from 'node:util';
import { algorithmValue, type AlgorithmName } from '../../client/gateway-client';
import { CLIENT_FLAG_SPEC, CLIENT_OPTIONS_HELP, clientFromFlags } from './client-options';
import { ALL_ALGORITHM_NAMES, algorithmByName } from '../../common/algorithms';

export const SIGN_HELP = `Usage: hsm-gateway sign --key NAME --alg ALGORITHM (--digest HEX | --in FILE) [options]

Signs through a running gateway and prints the signature (hex; ECDSA is DER).
  --key NAME        key name, e.g. dev-ec
  --alg ALGORITHM   one of ${ALL_ALGORITHM_NAMES.join(', ')}
  --digest HEX      a digest of the algorithm's hash length
  --in FILE         a file to sign (hashed by the gateway; "-" for stdin)
  --base64          print base64 instead of hex
${CLIENT_OPTIONS_HELP}`;

export async function signCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { ...CLIENT_FLAG_SPEC, key: { type: 'string' }, alg: { type: 'string' }, digest: { type: 'string' }, in: { type: 'string' }, base64: { type: 'boolean' } } });
  if (values.help) {
    process.stdout.write(`${SIGN_HELP}\n`);
    return 0;
  }
  if (!values.key || !values.alg || (values.digest === undefined) === (values.in === undefined)) {
    process.stderr.write(`hsm-gateway sign: --key, --alg and exactly one of --digest or --in are required\n\n${SIGN_HELP}\n`);
    return 2;
  }
  if (!algorithmByName(values.alg)) {
    process.stderr.write(`hsm-gateway sign: unknown --alg ${values.alg}; use one of ${ALL_ALGORITHM_NAMES.join(', ')}\n`);
    return 2;
  }
  if (values.digest !== undefined && !/^([0-9a-fA-F]{2})+$/.test(values.digest)) {
    process.stderr.write('hsm-gateway sign: --digest must be hex\n');
    return 2;
  }
  const client = clientFromFlags(values);
  try {
    const alg = algorithmValue(values.alg as AlgorithmName);
    const signature = values.digest !== undefined
      ? await client.sign(values.key, alg, Buffer.from(values.digest, 'hex'))
      : await client.signMessage(values.key, alg, fs.readFileSync(values.in === '-' ? 0 : (values.in as string)));
    const text = values.base64 ? signature.toString('base64') : signature.toString('hex');
    process.stdout.write(values.json ? `${JSON.stringify({ key: values.key, algorithm: values.alg, signature: text })}\n` : `${text}\n`);
    return 0;
  } finally {
    client.close();
  }
}
