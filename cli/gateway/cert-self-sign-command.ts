// `hsm-gateway cert self-sign`: a client command, signed by the HSM key through a running gateway (no PIN).
import { X509Certificate } from 'node:crypto';
import { toPem } from '../../common/x509/certificates';
import { CLIENT_OPTIONS_HELP } from './client-options';
import { EXIT_CODES_HELP, EXIT_OK, UsageError, parseFlags, writeJson } from '../command-support';
import {
  X509_SIGNING_FLAG_SPEC, X509_SIGNING_HELP, checkSigningFlags, parseSans, parseSubject, sanStrings, signerFromFlags, writePemOutput,
} from './gateway-signing-options';

export const CERT_SELF_SIGN_HELP = `Usage: hsm-gateway cert self-sign --key NAME [--days N] [--subject DN] [--san LIST] [--out FILE] [options]

Writes a self-signed certificate (PEM) for a key held in the HSM, signed by the key through a
running gateway (no PIN). For development: browsers and proxies will not trust it. Install it with
"hsm-gateway cert install --name LABEL --chain FILE" on the gateway host.
  --days N            validity in days (default 30)
  --subject DN        default "CN=<key name>"
${X509_SIGNING_HELP}
${CLIENT_OPTIONS_HELP}
${EXIT_CODES_HELP}`;

export async function certSelfSignCommand(argv: string[]): Promise<number> {
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

