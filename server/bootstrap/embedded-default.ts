import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { stringify as toYaml } from 'yaml';
import { certificateNames, selfSignedCertificate } from '../../common/x509/certificates';
import { remoteCryptoKey } from '../../common/x509/remote-crypto';
import { HsmModule } from '../pkcs11/hsm-module';
import { resolveKey } from '../pkcs11/key-store';
import { findPrivateKeyByLabel, generateSigningKey, initToken, resolvedKeyKind, signMessageDirect, storeCertificate, type KeySpec } from '../pkcs11/token-admin';
import { DEV_CLIENT_IDENTITY, ensureDevPki } from './dev-pki';
import { ensureSoftHsmInstalled, useSoftHsmState } from './softhsm';
import { DEFAULT_GRPC_LISTEN, DEFAULT_HTTP_LISTEN } from '../config/load-config';
import { findSecretKeyByLabel, generateTicketRoot } from '../pkcs11/ticket-root';

export const DEV_TOKEN_LABEL = 'hsm-gateway-dev';
export const DEV_KEYS: ReadonlyArray<{ name: string; spec: KeySpec }> = [
  { name: 'dev-ec', spec: 'ec-p256' },
  { name: 'dev-rsa', spec: 'rsa-2048' },
];

/** The root secret of the session-ticket keys, and the scope the dev identity may watch. */
export const DEV_TICKET_ROOT = 'ticket-root';
export const DEV_TICKET_SCOPE = 'default';

export interface EmbeddedDefault {
  stateDir: string;
  configFile: string;
  softhsmConf: string;
  pki: { ca: string; clientCert: string; clientKey: string };
  created: string[];
}

export function defaultStateDir(env: NodeJS.ProcessEnv = process.env): string {
  return path.resolve(env.HSMGW_STATE_DIR || '.hsm-gateway');
}

function writeSecret(file: string, value: string): void {
  fs.writeFileSync(file, `${value}\n`, { mode: 0o600 });
  fs.chmodSync(file, 0o600);
}

function readSecret(file: string): string {
  return fs.readFileSync(file, 'utf8').replace(/\r?\n$/, '');
}

/** Token, keys and on-token certificates. Each step is skipped when already done. */
async function ensureToken(modulePath: string, stateDir: string, created: string[]): Promise<string> {
  const pinFile = path.join(stateDir, 'pin');
  const soPinFile = path.join(stateDir, 'so-pin');
  const module = new HsmModule(modulePath);
  module.load();
  module.initialize();
  try {
    if (!module.hasToken(DEV_TOKEN_LABEL)) {
      const userPin = randomBytes(12).toString('hex');
      const soPin = randomBytes(12).toString('hex');
      initToken(module, DEV_TOKEN_LABEL, soPin, userPin);
      writeSecret(pinFile, userPin);
      writeSecret(soPinFile, soPin);
      created.push(`SoftHSM token "${DEV_TOKEN_LABEL}" (user PIN in ${pinFile}, mode 0600)`);
    }
    if (!fs.existsSync(pinFile)) throw new Error(`token "${DEV_TOKEN_LABEL}" exists but its PIN file ${pinFile} is missing; delete ${stateDir} to start over`);
    module.selectToken({ label: DEV_TOKEN_LABEL });
    const session = module.openReadWriteSession();
    try {
      module.login(session, readSecret(pinFile));
      for (const { name, spec } of DEV_KEYS) {
        if (!findPrivateKeyByLabel(module, session, name)) {
          generateSigningKey(module, session, name, spec);
          created.push(`key "${name}" (${spec}) generated inside the token: sensitive, never extractable`);
        }
        const key = resolveKey(module, session, { name, label: name });
        if (key.certificateChain.length === 0) {
          const signer = async (alg: number, message: Buffer): Promise<Buffer> => signMessageDirect(module, session, key, alg, message);
          const der = await selfSignedCertificate(key.spki, remoteCryptoKey(resolvedKeyKind(key), signer), {
            subject: `CN=${name}.localhost`, san: { dns: ['localhost'], ip: ['127.0.0.1'] }, days: 825,
          });
          storeCertificate(module, session, Buffer.from(key.id, 'hex'), name, der, certificateNames(der));
          created.push(`self-signed certificate for "${name}" (CN=${name}.localhost, DNS:localhost, IP:127.0.0.1), signed by the HSM key, stored on the token`);
        }
      }
      if (!findSecretKeyByLabel(module, session, DEV_TICKET_ROOT)) {
        generateTicketRoot(module, session, DEV_TICKET_ROOT);
        created.push(`session-ticket root secret "${DEV_TICKET_ROOT}" generated inside the token: sensitive, never extractable, HMAC only`);
      }
    } finally {
      module.closeSession(session);
    }
  } finally {
    module.finalize();
  }
  return pinFile;
}

/**
 * Brings up (or reuses) the embedded default in a state directory: a SoftHSM token with two keys
 * and their certificates, a development PKI and a config file that serves them on loopback.
 */
export async function ensureEmbeddedDefault(stateDir: string, say: (line: string) => void = () => undefined): Promise<EmbeddedDefault> {
  const created: string[] = [];
  const modulePath = ensureSoftHsmInstalled(say);
  fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const softhsmConf = useSoftHsmState(stateDir);
  const pinFile = await ensureToken(modulePath, stateDir, created);
  const { paths, created: pkiCreated } = await ensureDevPki(path.join(stateDir, 'pki'));
  if (pkiCreated) created.push(`development PKI in ${path.join(stateDir, 'pki')}: ca.pem, server.pem/.key (localhost, 127.0.0.1), client.pem/.key (${DEV_CLIENT_IDENTITY})`);
  const configFile = path.join(stateDir, 'config.yaml');
  if (!fs.existsSync(configFile)) {
    const config = {
      pkcs11: { module: modulePath, environment: { SOFTHSM2_CONF: softhsmConf }, token: { label: DEV_TOKEN_LABEL }, pin: { file: pinFile } },
      keys: DEV_KEYS.map(({ name }) => ({ name, label: name })),
      tls: { cert: paths.serverCert, key: paths.serverKey, clientCa: paths.ca },
      authorization: { rules: [{ identity: DEV_CLIENT_IDENTITY, keys: DEV_KEYS.map((k) => k.name), ticketKeyScopes: [DEV_TICKET_SCOPE] }] },
      ticketKeys: { root: DEV_TICKET_ROOT },
    };
    const header = '# hsm-gateway embedded default (development only). Edit freely; see README "Configuration".\n'
      + `# listen: grpc ${DEFAULT_GRPC_LISTEN}, http ${DEFAULT_HTTP_LISTEN} by default (HSMGW_LISTEN, HSMGW_METRICS_LISTEN)\n`;
    fs.writeFileSync(configFile, `${header}${toYaml(config)}`, { mode: 0o600 });
    created.push(`config ${configFile}`);
  }
  return { stateDir, configFile, softhsmConf, pki: { ca: paths.ca, clientCert: paths.clientCert, clientKey: paths.clientKey }, created };
}
