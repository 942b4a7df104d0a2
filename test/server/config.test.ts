import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { buildConfig } from '../../server/config/load-config';
import { ConfigError } from '../../server/config/config-error';
import { parsePkcs11Uri } from '../../server/pkcs11/rfc7512';

const base = (): Record<string, unknown> => ({
  pkcs11: { module: '/usr/lib/softhsm/libsofthsm2.so', token: { label: 't' }, pin: { file: 'pin' } },
  keys: [{ name: 'web', label: 'web-2026' }],
  tls: { cert: 'server.pem', key: 'server.key', clientCa: 'ca.pem' },
  authorization: { rules: [{ identity: 'spiffe://x/*', keys: ['web'] }] },
});

function expectError(doc: Record<string, unknown>, field: string, pattern: RegExp, env: NodeJS.ProcessEnv = {}): void {
  assert.throws(() => buildConfig(doc, '/etc/hsm-gateway', env), (err: unknown) => {
    assert.ok(err instanceof ConfigError, String(err));
    assert.equal(err.field, field);
    assert.match(err.message, pattern);
    assert.equal(err.message.split('\n').length, 1, 'one line');
    return true;
  });
}

describe('configuration', () => {
  it('fills defaults and resolves paths against the config directory', () => {
    const c = buildConfig(base(), '/etc/hsm-gateway', {});
    assert.equal(c.listen.grpc, '127.0.0.1:8443');
    assert.equal(c.listen.http, '127.0.0.1:9464');
    assert.equal(c.pkcs11.pin.file, '/etc/hsm-gateway/pin');
    assert.equal(c.tls.clientCa, '/etc/hsm-gateway/ca.pem');
    assert.equal(c.pkcs11.sessions.max, 8);
    assert.equal(c.limits.maxMessageBytes, 65536);
    assert.deepEqual(c.authorization.rules[0].algorithms, []);
  });

  it('environment overrides win over the file', () => {
    const c = buildConfig(base(), '/x', { HSMGW_LISTEN: '0.0.0.0:9000', HSMGW_METRICS_LISTEN: '[::1]:9999', HSMGW_PIN_FILE: '/run/secrets/pin', HSMGW_LOG_LEVEL: 'debug' });
    assert.equal(c.listen.grpc, '0.0.0.0:9000');
    assert.equal(c.listen.http, '[::1]:9999');
    assert.equal(c.pkcs11.pin.file, '/run/secrets/pin');
    assert.equal(c.logging.level, 'debug');
  });

  it('lists the environment overrides that replaced a value written in the file (logged at start-up)', () => {
    const doc = { ...base(), listen: { grpc: '127.0.0.1:8443', http: '127.0.0.1:9464' } };
    const c = buildConfig(doc, '/x', { HSMGW_LISTEN: '127.0.0.1:8443', HSMGW_METRICS_LISTEN: '0.0.0.0:9464', HSMGW_LOG_LEVEL: 'debug' });
    assert.deepEqual(c.environmentOverrides, [{ env: 'HSMGW_METRICS_LISTEN', field: 'listen.http', fileValue: '127.0.0.1:9464', value: '0.0.0.0:9464' }]);
  });

  it('ECDSA with every hash, or none, is accepted; RSA hash restrictions are enforceable and accepted', () => {
    for (const algorithms of [['ECDSA_SHA256', 'ECDSA_SHA384', 'ECDSA_SHA512'], ['RSA_PSS_SHA256'], ['RSA_PKCS1_SHA256', 'ECDSA_SHA256', 'ECDSA_SHA384', 'ECDSA_SHA512']]) {
      const doc = { ...base(), authorization: { rules: [{ identity: 'spiffe://x/*', keys: ['web'], algorithms }] } };
      assert.deepEqual(buildConfig(doc, '/x', {}).authorization.rules[0].algorithms, algorithms);
    }
  });

  it('new limits have their documented defaults', () => {
    const { limits } = buildConfig(base(), '/x', {});
    assert.deepEqual(
      [limits.maxConnections, limits.maxHandshakes, limits.maxHandshakesPerAddress, limits.handshakeTimeoutMs, limits.maxConnectionAgeMs, limits.maxConnectionAgeGraceMs, limits.maxSessionMemoryMb, limits.maxSignStreamsPerConnection],
      [10_000, 256, 16, 3000, 3_600_000, 10_000, 16, 16],
    );
  });

  it('a bad environment override is reported under the field it overrides', () => {
    expectError(base(), 'listen.grpc', /host:port/, { HSMGW_LISTEN: 'nonsense' });
    expectError(base(), 'pkcs11.signThreads', /integer between 1 and 64/, { HSMGW_SIGN_THREADS: 'two' });
    expectError(base(), 'pkcs11.signThreads', /integer between 1 and 64/, { HSMGW_SIGN_THREADS: '0' });
  });

  it('HSMGW_SIGN_THREADS (serve --sign-threads) sets pkcs11.signThreads; the default is 2', () => {
    assert.equal(buildConfig(base(), '/x', {}).pkcs11.signThreads, 2);
    assert.equal(buildConfig(base(), '/x', { HSMGW_SIGN_THREADS: '1' }).pkcs11.signThreads, 1);
  });

  const mistakes: Array<[string, (d: Record<string, unknown>) => void, string, RegExp]> = [
    ['unknown top-level field', (d) => { d.sesions = {}; }, 'sesions', /unknown field/],
    ['typo inside pkcs11', (d) => { (d.pkcs11 as Record<string, unknown>).modul = 'x'; }, 'pkcs11.modul', /unknown field/],
    ['no token selector', (d) => { (d.pkcs11 as Record<string, unknown>).token = {}; }, 'pkcs11.token', /label or serial/],
    ['both PIN sources', (d) => { (d.pkcs11 as Record<string, unknown>).pin = { file: 'a', env: 'B' }; }, 'pkcs11.pin', /exactly one/],
    ['PIN written inline', (d) => { (d.pkcs11 as Record<string, unknown>).pin = { value: '1234' }; }, 'pkcs11.pin.value', /unknown field/],
    ['pool max not an integer', (d) => { (d.pkcs11 as Record<string, unknown>).sessions = { max: 'many' }; }, 'pkcs11.sessions.max', /integer/],
    ['pool min above max', (d) => { (d.pkcs11 as Record<string, unknown>).sessions = { min: 9, max: 4 }; }, 'pkcs11.sessions.min', /must not exceed/],
    ['key without a locator', (d) => { d.keys = [{ name: 'web' }]; }, 'keys[0]', /label, id or uri/],
    ['duplicate key name', (d) => { d.keys = [{ name: 'web', label: 'a' }, { name: 'web', label: 'b' }]; }, 'keys[1].name', /duplicate/],
    ['bad CKA_ID hex', (d) => { d.keys = [{ name: 'web', id: 'xyz' }]; }, 'keys[0].id', /hex/],
    ['PIN inside a PKCS#11 URI', (d) => { d.keys = [{ name: 'web', uri: 'pkcs11:object=web?pin-value=1234' }]; }, 'keys[0].uri', /pin-value/],
    ['rule naming an unknown key', (d) => { d.authorization = { rules: [{ identity: 'a', keys: ['nope'] }] }; }, 'authorization.rules[0].keys[0]', /no key named "nope"/],
    ['rule with an unknown algorithm', (d) => { d.authorization = { rules: [{ identity: 'a', keys: ['web'], algorithms: ['MD5'] }] }; }, 'authorization.rules[0].algorithms[0]', /unknown algorithm "MD5"/],
    ['wildcard in the middle', (d) => { d.authorization = { rules: [{ identity: 'a*b', keys: ['web'] }] }; }, 'authorization.rules[0].identity', /last character/],
    ['rule without keys', (d) => { d.authorization = { rules: [{ identity: 'a', keys: [] }] }; }, 'authorization.rules[0].keys', /at least one/],
    ['missing TLS cert', (d) => { d.tls = { key: 'k', clientCa: 'c' }; }, 'tls.cert', /required/],
    ['bad listen address', (d) => { d.listen = { grpc: 'localhost' }; }, 'listen.grpc', /host:port/],
    ['bad log level', (d) => { d.logging = { level: 'loud' }; }, 'logging.level', /one of/],
    ['ECDSA restricted to some hashes', (d) => { d.authorization = { rules: [{ identity: 'spiffe://x/*', keys: ['web'], algorithms: ['ECDSA_SHA256', 'RSA_PSS_SHA256'] }] }; }, 'authorization.rules[0].algorithms', /lists ECDSA_SHA256 without ECDSA_SHA384, ECDSA_SHA512: the gateway cannot restrict ECDSA to some hashes .*list all of ECDSA_SHA256, ECDSA_SHA384, ECDSA_SHA512 or none of them/],
    ['more handshakes than connections', (d) => { d.limits = { maxConnections: 10, maxHandshakes: 11 }; }, 'limits.maxHandshakes', /between 1 and 10/],
  ];
  for (const [name, mutate, field, pattern] of mistakes) {
    it(`names the field: ${name}`, () => {
      const doc = base();
      mutate(doc);
      expectError(doc, field, pattern);
    });
  }
});

describe('RFC 7512 PKCS#11 URIs', () => {
  it('parses object, id (percent-encoded), token and type', () => {
    assert.deepEqual(parsePkcs11Uri('pkcs11:token=hsm%20one;object=web-2026;id=%01%a2;type=private'), { token: 'hsm one', object: 'web-2026', id: '01a2', type: 'private' });
  });
  it('refuses PINs, unknown attributes and non-private types', () => {
    assert.throws(() => parsePkcs11Uri('pkcs11:object=a?pin-value=1'), /pin-value/);
    assert.throws(() => parsePkcs11Uri('pkcs11:colour=red'), /unknown attribute/);
    assert.throws(() => parsePkcs11Uri('pkcs11:object=a;type=cert'), /private/);
    assert.throws(() => parsePkcs11Uri('pkcs11:id=%zz'), /percent-encoding/);
    assert.throws(() => parsePkcs11Uri('object=a'), /pkcs11:/);
  });
});

describe('keys whose private part could leave the HSM', () => {
  it('are refused at start-up unless allowExtractableKeys is set, and then a warning names them', async () => {
    const { startTestGateway } = await import('../support/test-gateway.js');
    const { EXTRACTABLE_KEY } = await import('../support/test-environment.js');
    const { Logger } = await import('../../server/observability/logger.js');
    const keys = [{ name: 'leaky', label: EXTRACTABLE_KEY }];
    await assert.rejects(startTestGateway({ keys, authorization: { rules: [] } }), /key "leaky" is extractable and not sensitive: its private part could leave the HSM/);
    const warnings: string[] = [];
    const logger = new Logger('warn');
    logger.warn = (msg: string) => { warnings.push(msg); };
    const gw = await startTestGateway({ keys, authorization: { rules: [] }, pkcs11: { allowExtractableKeys: true } }, logger);
    try {
      assert.deepEqual(warnings.filter((w) => w.includes('leaky')), ['key "leaky" is extractable and not sensitive; accepted because pkcs11.allowExtractableKeys is true']);
    } finally {
      await gw.stop();
    }
  });
});

describe('environment overrides at start-up', () => {
  it('a listen address from the environment that replaces the file\'s is served, and logged as a warning naming both', async () => {
    const { startGatewayProcess } = await import('../support/gateway-process.js');
    const { freePort } = await import('../support/free-port.js');
    const port = await freePort();
    const gw = await startGatewayProcess({ extraEnv: { HSMGW_METRICS_LISTEN: `127.0.0.2:${port}` } });
    try {
      const lines = gw.output().split('\n').filter((l) => l.includes('an environment variable overrides the config file')).map((l) => JSON.parse(l) as Record<string, string>);
      assert.equal(lines.length, 1, gw.output());
      assert.equal(lines[0].level, 'warn');
      assert.equal(lines[0].env, 'HSMGW_METRICS_LISTEN');
      assert.equal(lines[0].field, 'listen.http');
      assert.equal(lines[0].value, `127.0.0.2:${port}`);
      assert.equal(lines[0].file, new URL(gw.metricsUrl).host);
      assert.equal((await fetch(`http://127.0.0.2:${port}/healthz`)).status, 200);
    } finally {
      await gw.stop();
    }
  });
});
