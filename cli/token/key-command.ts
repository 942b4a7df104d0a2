import { createPublicKey } from 'node:crypto';
import { KEY_SPECS, findPrivateKeyByLabel, generateSigningKey, type KeySpec } from '../../server/pkcs11/token-admin';
import { AdminToken } from '../../server/lifecycle/admin-token';
import { describeTokenKey, listTokenKeys, type TokenKey } from '../../server/lifecycle/token-keys';
import { resolveKey } from '../../server/pkcs11/key-store';
import { findSecretKeyByLabel, generateTicketRoot } from '../../server/pkcs11/ticket-root';
import {
  ADMIN_OPTIONS_HELP, CommandError, EXIT_CODES_HELP, EXIT_OK, UsageError, adminConfigFile, parseFlags, runCommand, writeJson,
} from '../command-support';
import { isKeyName, KEY_NAME_RULE } from '../../common/names';

/** Same rule as gateway key names, so a generated label can be used as a name unchanged. */

export const KEY_HELP = `Usage: hsm-gateway key <generate|list> [options]

Key administration on the token (direct PKCS#11, run on the gateway host with the gateway's config).
  generate   generate a signing key inside the token
  list       list the private keys on the token, their flags and certificates

Run "hsm-gateway key <subcommand> --help" for its options.
${EXIT_CODES_HELP}`;

export const KEY_GENERATE_HELP = `Usage: hsm-gateway key generate --name NAME --type TYPE [--config FILE] [--json]

Generates a key pair inside the token. The private key is sensitive, never extractable and may
only sign (no decrypt, unwrap or derive); it gets CKA_LABEL=NAME and a fresh random 16-byte CKA_ID.
A key that already has the label NAME is never overwritten (exit 1).
  --name NAME   the key's label: letters, digits, ".", "_" or "-", up to 128, starting with a
                letter or digit
  --type TYPE   ${KEY_SPECS.join(' | ')} | ticket-root

ticket-root generates the root secret of the session-ticket keys instead (CKK_GENERIC_SECRET,
256 bits, sensitive, never extractable, MAC only): name it in the config's ticketKeys.root.

The gateway serves only keys named in its config: add { name: NAME, label: NAME } under keys
(and the name to an authorization rule), then reload the gateway.
${ADMIN_OPTIONS_HELP}
${EXIT_CODES_HELP}`;

export const KEY_LIST_HELP = `Usage: hsm-gateway key list [--config FILE] [--json]

Lists every private key on the token: label, type and size or curve, CKA_ID, flags (sensitive,
extractable, local...), the installed certificate (subject, expiry, chain length) and the names the
gateway config gives the key.
${ADMIN_OPTIONS_HELP}
${EXIT_CODES_HELP}`;

function flagWords(k: TokenKey): string {
  const f = k.flags;
  const words = [
    f.sensitive ? 'sensitive' : 'NOT-SENSITIVE',
    f.extractable ? 'EXTRACTABLE' : 'never-extractable',
    f.local ? 'local' : 'imported',
  ];
  if (f.extractable === false && !f.neverExtractable) words[1] = 'not-extractable';
  const uses = (['sign', 'decrypt', 'unwrap', 'derive'] as const).filter((u) => f[u]);
  return `${words.join(',')} use=${uses.join('+') || 'none'}`;
}

function describeLine(k: TokenKey): string {
  const kind = k.type === 'RSA' ? `RSA-${k.bits}` : k.curve ? `${k.type} ${k.curve}` : k.type;
  const cert = k.certificate
    ? `cert "${k.certificate.subject}" until ${k.certificate.notAfter}${k.certificate.expired ? ' (EXPIRED)' : ''}, chain ${k.certificate.chainLength}`
    : 'no certificate';
  const names = k.gatewayNames.length ? ` gateway names: ${k.gatewayNames.join(',')}` : '';
  const problem = k.problem ? ` PROBLEM: ${k.problem}` : '';
  return `${k.label || '(no label)'}\t${kind}\tid ${k.id || '(none)'}\t${flagWords(k)}\t${cert}${names}${problem}`;
}

function jsonKey(k: TokenKey): Record<string, unknown> {
  return { ...k };
}

async function generate(argv: string[]): Promise<number> {
  const values = parseFlags(argv, {
    name: { type: 'string' }, type: { type: 'string' }, config: { type: 'string', short: 'c' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    process.stdout.write(`${KEY_GENERATE_HELP}\n`);
    return EXIT_OK;
  }
  if (values.name === undefined || values.type === undefined) throw new UsageError('--name and --type are required');
  if (!isKeyName(values.name)) throw new UsageError(`--name "${values.name}": use ${KEY_NAME_RULE}`);
  if (values.type === TICKET_ROOT_TYPE) return generateRoot(values.name, values.config, values.json === true);
  if (!(KEY_SPECS as readonly string[]).includes(values.type)) throw new UsageError(`--type "${values.type}": use one of ${KEY_SPECS.join(', ')}`);
  const spec = values.type as KeySpec;
  const configFile = adminConfigFile(values.config);
  const token = AdminToken.open(configFile);
  try {
    const { module, session } = token;
    if (findPrivateKeyByLabel(module, session, values.name)) {
      throw new CommandError(`a key labelled "${values.name}" already exists on the token; refusing to overwrite it (pick another name, e.g. with the year)`, 'exists');
    }
    const started = performance.now();
    generateSigningKey(module, session, values.name, spec);
    const ms = Math.round(performance.now() - started);
    const handle = findPrivateKeyByLabel(module, session, values.name);
    if (!handle) throw new Error(`the token did not keep the key "${values.name}"`);
    const described = describeTokenKey(module, session, handle, token.config.keys);
    const resolved = resolveKey(module, session, { name: values.name, id: described.id });
    const publicKeyPem = createPublicKey({ key: resolved.spki, format: 'der', type: 'spki' }).export({ type: 'spki', format: 'pem' }).toString();
    if (values.json) {
      writeJson({ ...jsonKey(described), spec, publicKeyPem, generationMs: ms });
    } else {
      process.stdout.write(`generated ${spec} key "${values.name}" in the token (${ms} ms)\n`);
      process.stdout.write(`  CKA_ID     ${described.id}\n  flags      ${flagWords(described)}\n  public key SHA-256 ${described.publicKeySha256}\n`);
      process.stdout.write(`${publicKeyPem}`);
      process.stdout.write(`Next: add "{ name: ${values.name}, label: ${values.name} }" to keys in ${configFile} (and to a rule), reload the gateway, then\n`);
      process.stdout.write(`  hsm-gateway csr --key ${values.name} --subject "CN=..." --san dns:... > ${values.name}.csr\n`);
    }
    return EXIT_OK;
  } finally {
    token.close();
  }
}

const TICKET_ROOT_TYPE = 'ticket-root';

function generateRoot(name: string, config: string | undefined, json: boolean): number {
  const token = AdminToken.open(adminConfigFile(config));
  try {
    const { module, session } = token;
    if (findSecretKeyByLabel(module, session, name)) {
      throw new CommandError(`a secret key labelled "${name}" already exists on the token; refusing to overwrite it (every ticket key derives from it)`, 'exists');
    }
    generateTicketRoot(module, session, name);
    if (json) writeJson({ label: name, type: TICKET_ROOT_TYPE, sensitive: true, extractable: false });
    else {
      process.stdout.write(`generated ticket-root secret "${name}" in the token: CKK_GENERIC_SECRET, 256 bits, sensitive, never-extractable, use=sign (HMAC)\n`);
      process.stdout.write(`Next: add "ticketKeys: { root: ${name} }" to the gateway config and "ticketKeyScopes: [SCOPE]" to a rule, then restart the gateway.\n`);
    }
    return EXIT_OK;
  } finally {
    token.close();
  }
}

async function list(argv: string[]): Promise<number> {
  const values = parseFlags(argv, { config: { type: 'string', short: 'c' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } });
  if (values.help) {
    process.stdout.write(`${KEY_LIST_HELP}\n`);
    return EXIT_OK;
  }
  const token = AdminToken.open(adminConfigFile(values.config));
  try {
    const keys = listTokenKeys(token.module, token.session, token.config.keys);
    if (values.json) writeJson(keys.map(jsonKey));
    else if (keys.length === 0) process.stdout.write('no private keys on the token\n');
    else for (const k of keys) process.stdout.write(`${describeLine(k)}\n`);
    return EXIT_OK;
  } finally {
    token.close();
  }
}

/** `hsm-gateway key generate|list`. */
export async function keyCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  switch (sub) {
    case 'generate': return runCommand('key generate', rest, () => generate(rest));
    case 'list': return runCommand('key list', rest, () => list(rest));
    case '-h': case '--help': case 'help':
      process.stdout.write(`${KEY_HELP}\n`);
      return EXIT_OK;
    default:
      return runCommand('key', argv, () => Promise.reject(new UsageError(sub === undefined ? 'a subcommand is required' : `unknown subcommand "${sub}"`)));
  }
}
