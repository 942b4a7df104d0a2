/**
 * The shared test fixture: the embedded default (the same code `npm start` runs) in a test state
 * directory, plus extra keys and client identities the tests need. Prepared once by
 * scripts/run-tests.js; any test file can also prepare it when run alone.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { webcrypto } from 'node:crypto';
import * as pkcs11js from 'pkcs11js';
import { ensureEmbeddedDefault } from '../../server/bootstrap/embedded-default';
import { createCertificateAuthority, issueLeaf, type CertificateAuthority } from '../../server/bootstrap/dev-pki';
import { HsmModule } from '../../server/pkcs11/hsm-module';
import { findSecretKeyByLabel } from '../../server/pkcs11/ticket-root';
import { findPrivateKeyByLabel, generateSigningKey, type KeySpec } from '../../server/pkcs11/token-admin';
import * as x509 from '../../common/x509/x509-library';
import { writePemFile } from '../../common/pem-file';

export const REPO_ROOT = path.resolve(__dirname, '..', '..', '..');
export const TEST_STATE_DIR = process.env.HSMGW_TEST_STATE_DIR ?? path.join(REPO_ROOT, '.hsm-gateway-test');

/** Keys on the test token beyond the embedded default's dev-ec and dev-rsa. */
export const EXTRA_KEYS: ReadonlyArray<{ name: string; spec: KeySpec }> = [
  { name: 'test-ec384', spec: 'ec-p384' },
  { name: 'test-rsa3072', spec: 'rsa-3072' },
  // A second P-256 key: signatures that are valid, but by the wrong key (negative controls).
  { name: 'alt-ec', spec: 'ec-p256' },
];

/** On the token but in no default config: extractable and not sensitive. */
export const EXTRACTABLE_KEY = 'test-extractable';
/** A generic secret that could leave the token: the gateway must refuse it as a ticket-key root. */
export const EXTRACTABLE_TICKET_ROOT = 'test-extractable-ticket-root';

function generateExtractableSecret(module: HsmModule, session: Buffer, label: string): void {
  module.p11.C_GenerateKey(session, { mechanism: pkcs11js.CKM_GENERIC_SECRET_KEY_GEN }, [
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY }, { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_GENERIC_SECRET },
    { type: pkcs11js.CKA_VALUE_LEN, value: 32 }, { type: pkcs11js.CKA_TOKEN, value: true }, { type: pkcs11js.CKA_LABEL, value: label },
    { type: pkcs11js.CKA_SIGN, value: true }, { type: pkcs11js.CKA_SENSITIVE, value: false }, { type: pkcs11js.CKA_EXTRACTABLE, value: true },
  ]);
}

function generateExtractableKey(module: HsmModule, session: Buffer, label: string): void {
  const id = Buffer.from(label);
  module.p11.C_GenerateKeyPair(session, { mechanism: pkcs11js.CKM_EC_KEY_PAIR_GEN }, [
    { type: pkcs11js.CKA_TOKEN, value: true }, { type: pkcs11js.CKA_LABEL, value: label }, { type: pkcs11js.CKA_ID, value: id },
    { type: pkcs11js.CKA_VERIFY, value: true }, { type: pkcs11js.CKA_EC_PARAMS, value: Buffer.from('06082a8648ce3d030107', 'hex') },
  ], [
    { type: pkcs11js.CKA_TOKEN, value: true }, { type: pkcs11js.CKA_LABEL, value: label }, { type: pkcs11js.CKA_ID, value: id },
    { type: pkcs11js.CKA_PRIVATE, value: true }, { type: pkcs11js.CKA_SIGN, value: true },
    { type: pkcs11js.CKA_SENSITIVE, value: false }, { type: pkcs11js.CKA_EXTRACTABLE, value: true },
  ]);
}

export const IDENTITIES = {
  dev: 'spiffe://hsm-gateway.dev/proxy',
  pssOnly: 'spiffe://hsm-gateway.test/pss-only',
  wildcard: 'spiffe://hsm-gateway.test/wild/proxy-1',
  nobody: 'spiffe://hsm-gateway.test/nobody',
  dnsOnly: 'proxy.hsm-gateway.test',
} as const;

export interface ClientIdentity { cert: string; key: string }

export interface TestEnvironment {
  stateDir: string;
  modulePath: string;
  softhsmConf: string;
  pinFile: string;
  tokenLabel: string;
  pki: {
    ca: string;
    serverCert: string;
    serverKey: string;
    otherCa: string;
    clients: Record<'dev' | 'pssOnly' | 'wildcard' | 'nobody' | 'dnsOnly' | 'otherCa' | 'expired', ClientIdentity>;
  };
}

const MANIFEST = 'test-environment.json';
/**
 * Bumped whenever prepare() puts something new on the token or in the PKI: a fixture kept from an
 * older checkout (the bench keeps its own across runs) is then prepared again, in place.
 */
const FIXTURE_VERSION = 2; // 2: the ticket-key roots of issue 14

export async function writeIdentity(dir: string, name: string, ca: CertificateAuthority, opts: Parameters<typeof issueLeaf>[1]): Promise<ClientIdentity> {
  const issued = await issueLeaf(ca, opts);
  const cert = path.join(dir, `${name}.pem`);
  const key = path.join(dir, `${name}.key`);
  writePemFile(cert, issued.certPem, 0o644);
  writePemFile(key, issued.keyPem, 0o600);
  return { cert, key };
}

/** The dev CA of a state directory's PKI, re-created from its files to issue more certificates. */
export async function loadDevCa(pkiDir: string): Promise<CertificateAuthority> {
  const caCert = new x509.X509Certificate(fs.readFileSync(path.join(pkiDir, 'ca.pem'), 'utf8'));
  const caKeyPem = fs.readFileSync(path.join(pkiDir, 'ca.key'), 'utf8');
  const der = Buffer.from(caKeyPem.replace(/-----[^-]+-----|\s/g, ''), 'base64');
  const privateKey = await webcrypto.subtle.importKey('pkcs8', der, { name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign']);
  const publicKey = await webcrypto.subtle.importKey('spki', Buffer.from(caCert.publicKey.rawData), { name: 'ECDSA', namedCurve: 'P-256' }, true, ['verify']);
  return { keys: { privateKey, publicKey }, cert: caCert, certPem: caCert.toString('pem'), keyPem: caKeyPem };
}

async function prepare(): Promise<TestEnvironment> {
  const embedded = await ensureEmbeddedDefault(TEST_STATE_DIR);
  const config = fs.readFileSync(embedded.configFile, 'utf8');
  const modulePath = /module: (\S+)/.exec(config)?.[1] ?? '/usr/lib/softhsm/libsofthsm2.so';
  const pinFile = path.join(TEST_STATE_DIR, 'pin');

  const module = new HsmModule(modulePath);
  module.load();
  module.initialize();
  try {
    module.selectToken({ label: 'hsm-gateway-dev' });
    const session = module.openReadWriteSession();
    module.login(session, fs.readFileSync(pinFile, 'utf8').trim());
    for (const { name, spec } of EXTRA_KEYS) {
      if (!findPrivateKeyByLabel(module, session, name)) generateSigningKey(module, session, name, spec);
    }
    // A key whose private part could leave the token: the gateway must refuse it by default.
    if (!findPrivateKeyByLabel(module, session, EXTRACTABLE_KEY)) generateExtractableKey(module, session, EXTRACTABLE_KEY);
    if (!findSecretKeyByLabel(module, session, EXTRACTABLE_TICKET_ROOT)) generateExtractableSecret(module, session, EXTRACTABLE_TICKET_ROOT);
    module.closeSession(session);
  } finally {
    module.finalize();
  }

  const pkiDir = path.join(TEST_STATE_DIR, 'pki');
  const clientsDir = path.join(TEST_STATE_DIR, 'test-clients');
  const devCa = await loadDevCa(pkiDir);
  const otherCa = await createCertificateAuthority('some other CA');
  writePemFile(path.join(clientsDir, 'other-ca.pem'), otherCa.certPem, 0o644);
  const past = new Date(Date.now() - 10 * 86_400_000);

  const env: TestEnvironment = {
    stateDir: TEST_STATE_DIR,
    modulePath,
    softhsmConf: embedded.softhsmConf,
    pinFile,
    tokenLabel: 'hsm-gateway-dev',
    pki: {
      ca: path.join(pkiDir, 'ca.pem'),
      serverCert: path.join(pkiDir, 'server.pem'),
      serverKey: path.join(pkiDir, 'server.key'),
      otherCa: path.join(clientsDir, 'other-ca.pem'),
      clients: {
        dev: { cert: embedded.pki.clientCert, key: embedded.pki.clientKey },
        pssOnly: await writeIdentity(clientsDir, 'pss-only', devCa, { commonName: 'pss-only', uri: [IDENTITIES.pssOnly], usage: 'client' }),
        wildcard: await writeIdentity(clientsDir, 'wildcard', devCa, { commonName: 'wild', uri: [IDENTITIES.wildcard], usage: 'client' }),
        nobody: await writeIdentity(clientsDir, 'nobody', devCa, { commonName: 'nobody', uri: [IDENTITIES.nobody], usage: 'client' }),
        dnsOnly: await writeIdentity(clientsDir, 'dns-only', devCa, { commonName: 'dns-only', dns: [IDENTITIES.dnsOnly], usage: 'client' }),
        otherCa: await writeIdentity(clientsDir, 'other-ca-client', otherCa, { commonName: 'intruder', uri: [IDENTITIES.dev], usage: 'client' }),
        expired: await writeIdentity(clientsDir, 'expired', devCa, { commonName: 'expired', uri: [IDENTITIES.dev], usage: 'client', notBefore: new Date(past.getTime() - 86_400_000), notAfter: past }),
      },
    },
  };
  fs.writeFileSync(path.join(TEST_STATE_DIR, MANIFEST), JSON.stringify({ ...env, fixtureVersion: FIXTURE_VERSION }, null, 2));
  return env;
}

let cached: TestEnvironment | undefined;

/** The prepared environment; prepares it when missing. Also points SOFTHSM2_CONF at the test token. */
export async function testEnvironment(): Promise<TestEnvironment> {
  if (cached) return cached;
  const manifest = path.join(TEST_STATE_DIR, MANIFEST);
  const kept = fs.existsSync(manifest) ? (JSON.parse(fs.readFileSync(manifest, 'utf8')) as TestEnvironment & { fixtureVersion?: number }) : undefined;
  cached = kept?.fixtureVersion === FIXTURE_VERSION ? kept : await prepare();
  process.env.SOFTHSM2_CONF = cached.softhsmConf;
  return cached;
}

/** Entry point for scripts/run-tests.js: (re)prepare before the test files run. */
export async function prepareTestEnvironment(): Promise<TestEnvironment> {
  cached = await prepare();
  return cached;
}
