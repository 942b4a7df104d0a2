// `hsm-gateway cert install`: an admin command on the gateway host (direct PKCS#11, PIN from the config).
import * as fs from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { fromPem } from '../../common/x509/certificates';
import { AdminToken } from '../../server/lifecycle/admin-token';
import { ChainRefusedError, checkChain, installChain } from '../../server/lifecycle/certificate-chain';
import { KeyNotFoundError, describeTokenKey, findOneKey } from '../../server/lifecycle/token-keys';
import { resolveKey } from '../../server/pkcs11/key-store';
import {
  ADMIN_OPTIONS_HELP, CommandError, EXIT_CODES_HELP, EXIT_OK, UsageError, adminConfigFile, parseFlags, writeJson,
} from '../command-support';
import { errorMessage } from '../../common/errors';

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

function readChainFile(file: string): Buffer[] {
  let text: string;
  try {
    text = fs.readFileSync(file === '-' ? 0 : file, 'utf8');
  } catch (err) {
    throw new UsageError(`--chain: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? errorMessage(err)}`);
  }
  return fromPem(text, 'CERTIFICATE');
}

export async function certInstallCommand(argv: string[]): Promise<number> {
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

