import { toPem } from '../../common/x509/certificates';
import { CLIENT_OPTIONS_HELP } from './client-options';
import { EXIT_CODES_HELP, EXIT_OK, parseFlags, runCommand, writeJson } from '../command-support';
import { X509_SIGNING_FLAG_SPEC, X509_SIGNING_HELP, parseSans, parseSubject, sanStrings, signerFromFlags, checkSigningFlags, writePemOutput } from './gateway-signing-options';

export const CSR_HELP = `Usage: hsm-gateway csr --key NAME --subject DN [--san LIST] [--out FILE] [options]

Writes a PKCS#10 certificate request (PEM) for a key held in the HSM. The request is built here and
its signature is made by the HSM key through a running gateway: any client allowed to use the key
can run it, no PIN needed. Send the request to your CA, then install the certificate on the gateway
host with "hsm-gateway cert install".
${X509_SIGNING_HELP}
${CLIENT_OPTIONS_HELP}
${EXIT_CODES_HELP}`;

async function csr(argv: string[]): Promise<number> {
  const values = parseFlags(argv, X509_SIGNING_FLAG_SPEC);
  if (values.help) {
    process.stdout.write(`${CSR_HELP}\n`);
    return EXIT_OK;
  }
  checkSigningFlags(values);
  const subject = parseSubject(values.subject);
  const san = parseSans(values.san);
  const { client, signer } = await signerFromFlags(values);
  try {
    const pem = toPem(await signer.certificateRequest(subject, san), 'CERTIFICATE REQUEST');
    if (values.out !== undefined || !values.json) writePemOutput(values.out, pem);
    if (values.json) {
      writeJson({ key: signer.keyName, subject, san: sanStrings(san), signatureAlgorithm: signer.algorithm, out: values.out ?? null, csr: pem });
    } else if (values.out !== undefined) {
      process.stderr.write(`wrote a CSR for "${subject}" signed by HSM key "${signer.keyName}" (${signer.algorithm}) to ${values.out}\n`);
    }
    return EXIT_OK;
  } finally {
    client.close();
  }
}

/** `hsm-gateway csr`. With --json and no --out the PEM is only in the JSON object. */
export function csrCommand(argv: string[]): Promise<number> {
  return runCommand('csr', argv, () => csr(argv));
}
