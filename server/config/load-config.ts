import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { KeyType } from '../../proto/generated/hsmgateway/v1/signer';
import { ALL_ALGORITHM_NAMES, algorithmByName, algorithmNamesForKeyType } from '../../common/algorithms';
import { parseIdentityPattern } from '../auth/identity-pattern';
import { ConfigError } from './config-error';
import { FieldReader } from './field-reader';
import type { AuthorizationRule, EnvironmentOverride, GatewayConfig, KeyConfig, LogLevel, TicketKeysSection } from './gateway-config';
import { parsePkcs11Uri } from '../pkcs11/rfc7512';
import { isKeyName, KEY_NAME_RULE, parseHostPort } from '../../common/names';
import { errorMessage } from '../../common/errors';

export const DEFAULT_GRPC_LISTEN = '127.0.0.1:8443';
export const DEFAULT_HTTP_LISTEN = '127.0.0.1:9464';
export const DEFAULT_SOFTHSM_MODULE = '/usr/lib/softhsm/libsofthsm2.so';
/** A session-ticket key scope: a group of hostnames that resume each other's sessions. */
export const TICKET_SCOPE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/**
 * Environment variables that override the file. Each names the field it overrides so
 * that a validation error can say where the bad value came from.
 */
const ENV_OVERRIDES: ReadonlyArray<{ env: string; field: string[]; integer?: true }> = [
  { env: 'HSMGW_LISTEN', field: ['listen', 'grpc'] },
  { env: 'HSMGW_METRICS_LISTEN', field: ['listen', 'http'] },
  { env: 'HSMGW_PKCS11_MODULE', field: ['pkcs11', 'module'] },
  { env: 'HSMGW_TOKEN_LABEL', field: ['pkcs11', 'token', 'label'] },
  { env: 'HSMGW_PIN_FILE', field: ['pkcs11', 'pin', 'file'] },
  { env: 'HSMGW_LOG_LEVEL', field: ['logging', 'level'] },
  { env: 'HSMGW_SIGN_THREADS', field: ['pkcs11', 'signThreads'], integer: true },
];

/** Applies the overrides to `doc` in place; returns those that replaced a different value written in the file. */
function applyEnvOverrides(doc: Record<string, unknown>, env: NodeJS.ProcessEnv): EnvironmentOverride[] {
  const replaced: EnvironmentOverride[] = [];
  for (const { env: name, field, integer } of ENV_OVERRIDES) {
    const value = env[name];
    if (value === undefined || value === '') continue;
    let node = doc;
    for (const part of field.slice(0, -1)) {
      const next = node[part];
      if (next === undefined || next === null || typeof next !== 'object') node[part] = {};
      node = node[part] as Record<string, unknown>;
    }
    const leaf = field[field.length - 1];
    const fileValue = node[leaf];
    if (fileValue !== undefined && fileValue !== null && String(fileValue) !== value) {
      replaced.push({ env: name, field: field.join('.'), fileValue: String(fileValue), value });
    }
    // A number field gets a number; anything else is left for the field's own check to refuse.
    node[leaf] = integer && /^\d+$/.test(value) ? Number(value) : value;
    // The PIN file replaces any PIN source from the file.
    if (name === 'HSMGW_PIN_FILE') delete node.env;
  }
  return replaced;
}

export function parseListenAddress(field: string, value: string): { host: string; port: number } {
  const address = parseHostPort(value);
  if (!address) throw new ConfigError(field, `must be host:port, e.g. 127.0.0.1:8443 (got ${JSON.stringify(value)})`);
  return address;
}

function readKeys(root: FieldReader): KeyConfig[] {
  const names = new Set<string>();
  return root.list('keys').map((k) => {
    k.rejectUnknown(['name', 'label', 'id', 'uri']);
    const name = k.string('name');
    if (!isKeyName(name)) throw new ConfigError(`${k.path}.name`, `must be ${KEY_NAME_RULE}`);
    if (names.has(name)) throw new ConfigError(`${k.path}.name`, `duplicate key name "${name}"`);
    names.add(name);
    const key: KeyConfig = { name, label: k.optionalString('label'), id: k.optionalString('id')?.toLowerCase(), uri: k.optionalString('uri') };
    if (key.id !== undefined && !/^([0-9a-f]{2})+$/.test(key.id)) throw new ConfigError(`${k.path}.id`, 'must be an even number of hex digits (the CKA_ID)');
    if (key.uri !== undefined) {
      try {
        const uri = parsePkcs11Uri(key.uri);
        if (uri.object === undefined && uri.id === undefined) throw new Error('needs object= or id=');
      } catch (err) {
        throw new ConfigError(`${k.path}.uri`, errorMessage(err));
      }
    }
    if (key.label === undefined && key.id === undefined && key.uri === undefined) {
      throw new ConfigError(k.path, 'needs label, id or uri to find the key on the token');
    }
    return key;
  });
}

function readRules(root: FieldReader, keyNames: Set<string>): AuthorizationRule[] {
  const authz = root.object('authorization');
  authz.rejectUnknown(['rules']);
  return authz.list('rules').map((r) => {
    r.rejectUnknown(['identity', 'keys', 'algorithms', 'rateLimit', 'ticketKeyScopes']);
    const identity = r.string('identity');
    try {
      parseIdentityPattern(identity);
    } catch (err) {
      throw new ConfigError(`${r.path}.identity`, errorMessage(err));
    }
    const keys = r.stringList('keys');
    const ticketKeyScopes = readTicketKeyScopes(r);
    if (keys.length === 0 && ticketKeyScopes.length === 0) throw new ConfigError(`${r.path}.keys`, 'must list at least one key name or ticket key scope (deny is the default)');
    for (const [i, k] of keys.entries()) {
      if (k.includes('*') && k.indexOf('*') !== k.length - 1) throw new ConfigError(`${r.path}.keys[${i}]`, 'a wildcard is allowed only as the last character');
      if (!k.includes('*') && !keyNames.has(k)) throw new ConfigError(`${r.path}.keys[${i}]`, `no key named "${k}" in keys`);
    }
    const algorithms = r.stringList('algorithms');
    for (const [i, a] of algorithms.entries()) {
      if (!algorithmByName(a)) throw new ConfigError(`${r.path}.algorithms[${i}]`, `unknown algorithm "${a}" (expected one of: ${ALL_ALGORITHM_NAMES.join(', ')})`);
    }
    checkNoEcdsaHashRestriction(`${r.path}.algorithms`, algorithms);
    let rateLimit: AuthorizationRule['rateLimit'];
    if (r.has('rateLimit')) {
      const rl = r.object('rateLimit');
      rl.rejectUnknown(['perSecond', 'burst']);
      const perSecond = rl.integer('perSecond', 0, 1);
      if (perSecond === 0) throw new ConfigError(`${rl.path}.perSecond`, 'is required');
      rateLimit = { perSecond, burst: rl.integer('burst', perSecond, 1) };
    }
    return { identity, keys, algorithms, rateLimit, ticketKeyScopes };
  });
}

function readTicketKeyScopes(rule: FieldReader): string[] {
  const scopes = rule.stringList('ticketKeyScopes');
  for (const [i, scope] of scopes.entries()) {
    const literal = scope.endsWith('*') ? scope.slice(0, -1) : scope;
    if (literal.includes('*') || (literal !== '' && !TICKET_SCOPE.test(literal)) || (literal === '' && scope !== '*')) {
      throw new ConfigError(`${rule.path}.ticketKeyScopes[${i}]`, 'must be 1-64 letters, digits, ".", "_" or "-", optionally ending with a wildcard "*"');
    }
  }
  return scopes;
}

function readTicketKeys(root: FieldReader, rules: AuthorizationRule[]): TicketKeysSection | undefined {
  if (!root.has('ticketKeys')) {
    const granting = rules.findIndex((r) => r.ticketKeyScopes.length > 0);
    if (granting >= 0) throw new ConfigError(`authorization.rules[${granting}].ticketKeyScopes`, 'grants ticket key scopes but there is no ticketKeys section');
    return undefined;
  }
  const t = root.object('ticketKeys');
  t.rejectUnknown(['root', 'epochSeconds', 'decryptEpochs']);
  const rootLabel = t.string('root');
  if (!isKeyName(rootLabel)) throw new ConfigError(`${t.path}.root`, 'must be the CKA_LABEL of the root secret (letters, digits, ".", "_" or "-")');
  return { root: rootLabel, epochSeconds: t.integer('epochSeconds', 3600, 1, 7 * 86_400), decryptEpochs: t.integer('decryptEpochs', 2, 0, 48) };
}

const ECDSA_ALGORITHMS = algorithmNamesForKeyType(KeyType.KEY_TYPE_EC);

/**
 * CKM_ECDSA signs the digest it is given, truncated to the curve's order: a SHA-384 digest cut
 * to 32 bytes, sent as ECDSA_SHA256, comes back as a valid ECDSA-with-SHA-384 signature. A rule
 * allowing some ECDSA hashes but not others would promise what the gateway cannot enforce.
 */
function checkNoEcdsaHashRestriction(field: string, algorithms: string[]): void {
  const listed = ECDSA_ALGORITHMS.filter((a) => algorithms.includes(a));
  if (listed.length === 0 || listed.length === ECDSA_ALGORITHMS.length) return;
  const missing = ECDSA_ALGORITHMS.filter((a) => !listed.includes(a));
  throw new ConfigError(field, `lists ${listed.join(', ')} without ${missing.join(', ')}: the gateway cannot restrict ECDSA to some hashes `
    + '(ECDSA signs whatever digest it is given, and a digest of another hash cut to this length signs as that hash); '
    + `list all of ${ECDSA_ALGORITHMS.join(', ')} or none of them`);
}

function resolvePath(baseDir: string, p: string): string {
  const expanded = p.startsWith('~/') ? path.join(os.homedir(), p.slice(2)) : p;
  return path.resolve(baseDir, expanded);
}

/** Validates a parsed document into a GatewayConfig with every default filled in. */
export function buildConfig(document: unknown, baseDir: string, env: NodeJS.ProcessEnv = process.env): GatewayConfig {
  const doc = structuredClone((document ?? {}) as Record<string, unknown>);
  const environmentOverrides = typeof doc === 'object' && !Array.isArray(doc) && doc !== null ? applyEnvOverrides(doc, env) : [];
  const root = FieldReader.root(doc);
  root.rejectUnknown(['pkcs11', 'keys', 'listen', 'tls', 'authorization', 'ticketKeys', 'limits', 'logging', 'shutdown']);

  const p = root.object('pkcs11');
  p.rejectUnknown(['module', 'environment', 'token', 'pin', 'signThreads', 'sessions', 'operationTimeoutMs', 'certificateRefreshMs', 'healthCheckIntervalMs', 'reconnectBackoffMs', 'allowExtractableKeys']);
  const token = p.object('token');
  token.rejectUnknown(['label', 'serial']);
  const tokenSel = { label: token.optionalString('label'), serial: token.optionalString('serial') };
  if (tokenSel.label === undefined && tokenSel.serial === undefined) throw new ConfigError('pkcs11.token', 'needs label or serial');
  const pin = p.object('pin');
  pin.rejectUnknown(['file', 'env']);
  const pinSource = { file: pin.optionalString('file'), env: pin.optionalString('env') };
  if ((pinSource.file === undefined) === (pinSource.env === undefined)) {
    throw new ConfigError('pkcs11.pin', 'needs exactly one of file or env (the PIN itself is never written in the config)');
  }
  if (pinSource.file !== undefined) pinSource.file = resolvePath(baseDir, pinSource.file);
  const sessions = p.object('sessions');
  sessions.rejectUnknown(['min', 'max', 'acquireTimeoutMs', 'maxWaiting', 'validateAfterIdleMs']);
  const max = sessions.integer('max', 8, 1, 4096);
  const min = sessions.integer('min', Math.min(2, max), 0, 4096);
  if (min > max) throw new ConfigError('pkcs11.sessions.min', `must not exceed pkcs11.sessions.max (${max})`);
  const backoff = p.object('reconnectBackoffMs');
  backoff.rejectUnknown(['initial', 'max']);
  const backoffInitial = backoff.integer('initial', 500, 10);
  const backoffMax = backoff.integer('max', 30_000, backoffInitial);

  const keys = readKeys(root);
  const rules = readRules(root, new Set(keys.map((k) => k.name)));
  const ticketKeys = readTicketKeys(root, rules);

  const listen = root.object('listen');
  listen.rejectUnknown(['grpc', 'http']);
  const grpcListen = listen.string('grpc', DEFAULT_GRPC_LISTEN);
  const httpListen = listen.string('http', DEFAULT_HTTP_LISTEN);
  parseListenAddress('listen.grpc', grpcListen);
  parseListenAddress('listen.http', httpListen);

  const tls = root.object('tls');
  tls.rejectUnknown(['cert', 'key', 'clientCa', 'crl']);
  const crl = tls.optionalString('crl');
  const limits = root.object('limits');
  limits.rejectUnknown([
    'maxInFlight', 'maxStreamInFlight', 'maxSignStreamsPerConnection', 'maxMessageBytes', 'maxReceiveMessageBytes', 'requestTimeoutMs', 'maxConcurrentStreams', 'maxConnections',
    'maxHandshakes', 'maxHandshakesPerAddress', 'handshakeTimeoutMs', 'maxConnectionAgeMs', 'maxConnectionAgeGraceMs', 'maxSessionMemoryMb',
  ]);
  const maxMessageBytes = limits.integer('maxMessageBytes', 64 * 1024, 1, 16 * 1024 * 1024);
  const maxConnections = limits.integer('maxConnections', 10_000, 1);
  // Handshakes get at most half of the connection slots by default: stalled ones cannot lock out the rest.
  const maxHandshakes = limits.integer('maxHandshakes', Math.min(256, Math.ceil(maxConnections / 2)), 1, maxConnections);
  const maxHandshakesPerAddress = limits.integer('maxHandshakesPerAddress', Math.min(16, maxHandshakes), 1, maxHandshakes);
  const logging = root.object('logging');
  logging.rejectUnknown(['level', 'audit']);
  const shutdown = root.object('shutdown');
  shutdown.rejectUnknown(['graceMs']);

  return {
    baseDir,
    environmentOverrides,
    pkcs11: {
      module: resolvePath(baseDir, p.string('module', DEFAULT_SOFTHSM_MODULE)),
      environment: p.stringMap('environment'),
      token: tokenSel,
      pin: pinSource,
      signThreads: p.integer('signThreads', 2, 1, 64),
      sessions: {
        min,
        max,
        acquireTimeoutMs: sessions.integer('acquireTimeoutMs', 2000, 1),
        maxWaiting: sessions.integer('maxWaiting', 1024, 0),
        validateAfterIdleMs: sessions.integer('validateAfterIdleMs', 30_000, 0),
      },
      operationTimeoutMs: p.integer('operationTimeoutMs', 5000, 10),
      healthCheckIntervalMs: p.integer('healthCheckIntervalMs', 5000, 100),
      certificateRefreshMs: p.integer('certificateRefreshMs', 60_000, 100),
      reconnectBackoffMs: { initial: backoffInitial, max: backoffMax },
      allowExtractableKeys: p.boolean('allowExtractableKeys', false),
    },
    keys,
    listen: { grpc: grpcListen, http: httpListen },
    tls: {
      cert: resolvePath(baseDir, tls.string('cert')),
      key: resolvePath(baseDir, tls.string('key')),
      clientCa: resolvePath(baseDir, tls.string('clientCa')),
      ...(crl !== undefined ? { crl: resolvePath(baseDir, crl) } : {}),
    },
    authorization: { rules },
    ...(ticketKeys ? { ticketKeys } : {}),
    limits: {
      maxInFlight: limits.integer('maxInFlight', 4096, 1),
      maxStreamInFlight: limits.integer('maxStreamInFlight', 1024, 1),
      maxSignStreamsPerConnection: limits.integer('maxSignStreamsPerConnection', 16, 1),
      maxMessageBytes,
      maxReceiveMessageBytes: limits.integer('maxReceiveMessageBytes', maxMessageBytes + 4096, maxMessageBytes + 64),
      requestTimeoutMs: limits.integer('requestTimeoutMs', 5000, 1),
      maxConcurrentStreams: limits.integer('maxConcurrentStreams', 1000, 1),
      maxConnections,
      maxHandshakes,
      maxHandshakesPerAddress,
      handshakeTimeoutMs: limits.integer('handshakeTimeoutMs', 3000, 100, 60_000),
      maxConnectionAgeMs: limits.integer('maxConnectionAgeMs', 3_600_000, 1000),
      maxConnectionAgeGraceMs: limits.integer('maxConnectionAgeGraceMs', 10_000, 0),
      maxSessionMemoryMb: limits.integer('maxSessionMemoryMb', 16, 1, 1024),
    },
    logging: {
      level: logging.oneOf<LogLevel>('level', ['debug', 'info', 'warn', 'error'], 'info'),
      audit: logging.boolean('audit', true),
    },
    shutdown: { graceMs: shutdown.integer('graceMs', 10_000, 0) },
  };
}

/** Reads, parses and validates a YAML config file. Errors are ConfigError with one clear line. */
export function loadConfigFile(file: string, env: NodeJS.ProcessEnv = process.env): GatewayConfig {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError('(file)', `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? errorMessage(err)}`);
  }
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw new ConfigError('(file)', `${file} is not valid YAML: ${errorMessage(err).split('\n')[0]}`);
  }
  return buildConfig(doc, path.dirname(path.resolve(file)), env);
}
