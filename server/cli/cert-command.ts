import * as fs from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { fromPem, toPem } from '../../common/x509/certificates';
import { AdminToken } from '../lifecycle/admin-token';
import { ChainRefusedError, checkChain, installChain } from '../lifecycle/certificate-chain';
import { KeyNotFoundError, describeTokenKey, findOneKey } from '../lifecycle/token-keys';
import { resolveKey } from '../pkcs11/key-store';
import { CLIENT_OPTIONS_HELP } from './client-options';
import {
  ADMIN_OPTIONS_HELP, CommandError, EXIT_CODES_HELP, EXIT_OK, UsageError, adminConfigFile, parseFlags, runCommand, writeJson,
} from './command-support';
import {
  X509_SIGNING_FLAG_SPEC, X509_SIGNING_HELP, checkSigningFlags, parseSans, parseSubject, sanStrings, signerFromFlags, writePemOutput,
} from './gateway-signing-options';

export const CERT_HELP = `Usage: hsm-gateway cert <install|self-sign> [options]

  install     store a certificate chain on the token with its key (direct PKCS#11, gateway host)
  self-sign   make a self-signed certificate for a key, signed through the gateway (development)

Run "hsm-gateway cert <subcommand> --help" for its options.
${EXIT_CODES_HELP}`;

export const CERT_INSTALL_HELP = `Usage: hsm-gateway cert install (--name LABEL | --id HEX) --chain FILE [--config FILE] [--json]

Stores a certificate chain on the token under the key's CKA_ID, where the gateway's GetKey finds
it (leaf first). Before anything is written it checks that:
  - one certificate's public key is the key's (otherwise: refused, reason public-key-mismatch);
  - every other certificate issued the one before it (name, signature, CA flag), and nothing
    unrelated is in the file (broken-chain);
  - nothing is expired (expired).
A refused chain leaves the token unchanged (exit 1). The previous chain of the key is replaced:
the new objects are written first, then the old ones deleted. Installing the same chain again
changes nothing. A running gateway serves the new chain after its next certificate refresh or
SIGHUP; no restart.
  --name LABEL   the key's CKA_LABEL (see "hsm-gateway key list")
  --id HEX       the key's CKA_ID, when labels are ambiguous
  --chain FILE   PEM file: the leaf and its intermediates, any order ("-" for stdin); the root
                 may be included
${ADMIN_OPTIONS_HELP}
${EXIT_CODES_HELP}`;

export const CERT_SELF_SIGN_HELP = `Usage: hsm-gateway cert self-sign --key NAME [--days N] [--subject DN] [--san LIST] [--out FILE] [options]

Writes a self-signed certificate (PEM) for a key held in the HSM, signed by the key through a
running gateway (no PIN). For development: browsers and proxies will not trust it. Install it with
"hsm-gateway cert install --name LABEL --chain FILE" on the gateway host.
  --days N            validity in days (default 30)
  --subject DN        default "CN=<key name>"
${X509_SIGNING_HELP}
${CLIENT_OPTIONS_HELP}
${EXIT_CODES_HELP}`;

function readChainFile(file: string): Buffer[] {
  let text: string;
  try {
    text = fs.readFileSync(file === '-' ? 0 : file, 'utf8');
  } catch (err) {
    throw new UsageError(`--chain: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  return fromPem(text, 'CERTIFICATE');
}

async function install(argv: string[]): Promise<number> {
  const values = parseFlags(argv, {
    name: { type: 'string' }, id: { type: 'string' }, chain: { type: 'string' }, config: { type: 'string', short: 'c' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    process.stdout.write(`${CERT_INSTALL_HELP}\n`);
    return EXIT_OK;
  }
  if (values.name === undefined && values.id === undefined) throw new UsageError('--name or --id is required');
  if (values.id !== undefined && !/^([0-9a-fA-F]{2})+$/.test(values.id)) throw new UsageError('--id must be hex (the CKA_ID)');
  if (values.chain === undefined) throw new UsageError('--chain is required');
  const certificates = readChainFile(values.chain);
  const token = AdminToken.open(adminConfigFile(values.config));
  try {
    const { module, session } = token;
    let handle: Buffer;
    try {
      handle = findOneKey(module, session, { label: values.name, id: values.id?.toLowerCase() });
    } catch (err) {
      if (err instanceof KeyNotFoundError) throw new CommandError(err.message, 'key-not-found');
      throw err;
    }
    const before = describeTokenKey(module, session, handle, token.config.keys);
    if (!before.id) throw new CommandError(`key "${before.label}" has an empty CKA_ID; the gateway finds certificates by CKA_ID, so a chain cannot be attached to it`, 'no-key-id');
    const key = resolveKey(module, session, { name: before.label || before.id, id: before.id });
    let checked;
    try {
      checked = checkChain(key.spki, certificates);
    } catch (err) {
      if (err instanceof ChainRefusedError) throw new CommandError(`refused: ${err.message}; nothing was written`, err.reason);
      throw err;
    }
    const result = installChain(module, session, { label: before.label, id: Buffer.from(before.id, 'hex') }, checked.chain);
    const after = describeTokenKey(module, session, handle, token.config.keys);
    const leaf = new X509Certificate(checked.chain[0]);
    if (values.json) {
      writeJson({
        key: after.label, id: after.id, gatewayNames: after.gatewayNames, certificate: after.certificate, ...result,
        previous: before.certificate ?? null, warnings: checked.warnings,
      });
    } else {
      for (const w of checked.warnings) process.stderr.write(`warning: ${w}\n`);
      if (result.unchanged) {
        process.stdout.write(`key "${after.label}": this chain is already installed; nothing changed\n`);
      } else {
        process.stdout.write(`key "${after.label}" (CKA_ID ${after.id}): installed ${result.stored} certificate(s), removed ${result.removed} old\n`);
        process.stdout.write(`  leaf "${leaf.subject.replace(/\n/g, ', ')}", issuer "${leaf.issuer.replace(/\n/g, ', ')}", valid until ${new Date(leaf.validTo).toISOString()}\n`);
        if (after.gatewayNames.length) process.stdout.write(`  gateway names ${after.gatewayNames.join(', ')}: served after the gateway's next certificate refresh, or at once on SIGHUP\n`);
      }
    }
    return EXIT_OK;
  } finally {
    token.close();
  }
}

async function selfSign(argv: string[]): Promise<number> {
  const values = parseFlags(argv, { ...X509_SIGNING_FLAG_SPEC, days: { type: 'string' } });
  if (values.help) {
    process.stdout.write(`${CERT_SELF_SIGN_HELP}\n`);
    return EXIT_OK;
  }
  const { key } = checkSigningFlags(values);
  const days = values.days === undefined ? 30 : Number(values.days);
  if (!Number.isInteger(days) || days < 1 || days > 36500) throw new UsageError('--days must be an integer from 1 to 36500');
  const subject = parseSubject(values.subject, `CN=${key}`);
  const san = parseSans(values.san);
  const { client, signer } = await signerFromFlags(values);
  try {
    const der = await signer.selfSignedCertificate({ subject, san, days });
    const pem = toPem(der, 'CERTIFICATE');
    if (values.out !== undefined || !values.json) writePemOutput(values.out, pem);
    const cert = new X509Certificate(der);
    if (values.json) {
      writeJson({
        key: signer.keyName, subject, san: sanStrings(san), signatureAlgorithm: signer.algorithm, notBefore: new Date(cert.validFrom).toISOString(),
        notAfter: new Date(cert.validTo).toISOString(), serial: cert.serialNumber.toLowerCase(), out: values.out ?? null, certificate: pem,
      });
    } else if (values.out !== undefined) {
      process.stderr.write(`wrote a self-signed certificate for "${subject}" (HSM key "${signer.keyName}", ${signer.algorithm}, until ${new Date(cert.validTo).toISOString()}) to ${values.out}\n`);
    }
    return EXIT_OK;
  } finally {
    client.close();
  }
}

/** `hsm-gateway cert install|self-sign`. */
export async function certCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  switch (sub) {
    case 'install': return runCommand('cert install', rest, () => install(rest));
    case 'self-sign': return runCommand('cert self-sign', rest, () => selfSign(rest));
    case '-h': case '--help': case 'help':
      process.stdout.write(`${CERT_HELP}\n`);
      return EXIT_OK;
    default:
      return runCommand('cert', argv, () => Promise.reject(new UsageError(sub === undefined ? 'a subcommand is required' : `unknown subcommand "${sub}"`)));
  }
}
