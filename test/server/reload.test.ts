import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tls from 'node:tls';
import { randomBytes, X509Certificate } from 'node:crypto';
import { stringify as toYaml, parse as parseYaml } from 'yaml';
import { GatewayClientError } from '../../client/gateway-client-error';
import { issueLeaf } from '../../server/bootstrap/dev-pki';
import { startTestGateway, type TestGateway } from '../support/test-gateway';
import { IDENTITIES, loadDevCa, TEST_STATE_DIR } from '../support/test-environment';
import { parsePrometheusText, sampleValue } from '../support/prometheus-text';
import { writePemFile } from '../../common/pem-file';

const waitFor = async (what: string, check: () => Promise<boolean>, ms = 10_000): Promise<void> => {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.fail(`timed out waiting for ${what}`);
};

const codeOf = async (p: Promise<unknown>): Promise<string> => {
  try {
    await p;
    return 'OK';
  } catch (err) {
    return (err as GatewayClientError).codeName;
  }
};

/** The serial number of the certificate the gateway presents to a new connection. */
function servedSerial(gw: TestGateway): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({
      host: '127.0.0.1', port: gw.gateway.grpcPort, servername: 'localhost', ca: fs.readFileSync(gw.env.pki.ca),
      cert: fs.readFileSync(gw.env.pki.clients.dev.cert), key: fs.readFileSync(gw.env.pki.clients.dev.key), ALPNProtocols: ['h2'],
    }, () => {
      resolve(s.getPeerX509Certificate()?.serialNumber ?? '');
      s.destroy();
    });
    s.on('error', reject);
  });
}

describe('live reload (file change and SIGHUP)', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hsmgw-reload-'));
  const configFile = path.join(dir, 'config.yaml');
  let gw: TestGateway;
  const metrics = async (): Promise<ReturnType<typeof parsePrometheusText>> => parsePrometheusText(await (await fetch(gw.metricsUrl)).text());
  const editConfig = (edit: (doc: Record<string, unknown>) => void): void => {
    const doc = parseYaml(fs.readFileSync(configFile, 'utf8')) as Record<string, unknown>;
    edit(doc);
    fs.writeFileSync(`${configFile}.tmp`, toYaml(doc));
    fs.renameSync(`${configFile}.tmp`, configFile);
  };

  before(async () => {
    // Our own copy of the server certificate and key, so the test can replace them.
    fs.copyFileSync(path.join(TEST_STATE_DIR, 'pki', 'server.pem'), path.join(dir, 'server.pem'));
    fs.copyFileSync(path.join(TEST_STATE_DIR, 'pki', 'server.key'), path.join(dir, 'server.key'));
    gw = await startTestGateway({ configFile, watchIntervalMs: 100, tls: { cert: path.join(dir, 'server.pem'), key: path.join(dir, 'server.key') } });
  });
  after(async () => {
    await gw.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('authorization rules and rate limits change on file change, without a restart', async () => {
    const nobody = gw.client('nobody');
    assert.equal(await codeOf(nobody.sign('dev-ec', 'ECDSA_SHA256', randomBytes(32))), 'PERMISSION_DENIED');
    editConfig((doc) => {
      (doc.authorization as { rules: unknown[] }).rules.push({ identity: IDENTITIES.nobody, keys: ['dev-ec'], rateLimit: { perSecond: 1, burst: 3 } });
    });
    await waitFor('the new rule', async () => (await codeOf(nobody.sign('dev-ec', 'ECDSA_SHA256', randomBytes(32)))) === 'OK');
    const codes: string[] = [];
    for (let i = 0; i < 6; i++) codes.push(await codeOf(nobody.sign('dev-ec', 'ECDSA_SHA256', randomBytes(32))));
    assert.ok(codes.includes('RESOURCE_EXHAUSTED'), codes.join(','));
    const err = await nobody.sign('dev-ec', 'ECDSA_SHA256', randomBytes(32)).catch((e: GatewayClientError) => e);
    assert.ok(err instanceof GatewayClientError);
    assert.match(err.details, /rate limit of 1\/s \(burst 3\) exceeded for "spiffe:\/\/hsm-gateway.test\/nobody"; retry after \d+ ms/);
    assert.ok(sampleValue(await metrics(), 'hsmgw_rate_limited_total', { identity: IDENTITIES.nobody }) >= 2);
    // Other identities are not limited.
    for (let i = 0; i < 6; i++) assert.equal(await codeOf(gw.client().sign('dev-ec', 'ECDSA_SHA256', randomBytes(32))), 'OK');
  });

  it('a key alias can be added and re-pointed live', async () => {
    editConfig((doc) => { (doc.keys as unknown[]).push({ name: 'web', label: 'dev-ec' }); (doc.authorization as { rules: Array<{ keys: string[] }> }).rules[0].keys.push('web'); });
    await waitFor('alias web', async () => (await codeOf(gw.client().getKey('web', { refresh: true }))) === 'OK');
    const ec = await gw.client().getKey('dev-ec');
    assert.ok((await gw.client().getKey('web', { refresh: true })).publicKey.equals(ec.publicKey));
    editConfig((doc) => { (doc.keys as Array<{ name: string; label: string }>).find((k) => k.name === 'web')!.label = 'test-ec384'; });
    const ec384 = await gw.client().getKey('test-ec384');
    await waitFor('alias re-pointed', async () => (await gw.client().getKey('web', { refresh: true })).publicKey.equals(ec384.publicKey));
  });

  it('a broken config is refused, counted, and the running configuration keeps serving', async () => {
    const before = sampleValue(await metrics(), 'hsmgw_config_reloads_total', { what: 'config', result: 'failed' });
    fs.writeFileSync(configFile, 'keys: [ this is : not yaml');
    await waitFor('the failed reload', async () => sampleValue(await metrics(), 'hsmgw_config_reloads_total', { what: 'config', result: 'failed' }) > before);
    assert.equal(await codeOf(gw.client().sign('dev-ec', 'ECDSA_SHA256', randomBytes(32))), 'OK');
    fs.writeFileSync(configFile, toYaml({ ...(parseYaml(toYaml({})) as object) }));
    await waitFor('the second failed reload', async () => sampleValue(await metrics(), 'hsmgw_config_reloads_total', { what: 'config', result: 'failed' }) > before + 1);
    assert.equal(await codeOf(gw.client().getKey('web')), 'OK', 'the alias from the last good config is still there');
  });

  it('a new server certificate is served to new connections; an open connection keeps working; a mismatched pair is refused', async () => {
    const client = gw.client();
    await client.sign('dev-ec', 'ECDSA_SHA256', randomBytes(32)); // opens the connection
    const oldSerial = await servedSerial(gw);
    const ca = await loadDevCa(path.join(gw.env.stateDir, 'pki'));
    const next = await issueLeaf(ca, { commonName: 'hsm-gateway-renewed', dns: ['localhost'], ip: ['127.0.0.1'], usage: 'server' });
    writePemFile(path.join(dir, 'server.key.new'), next.keyPem, 0o600);
    writePemFile(path.join(dir, 'server.pem.new'), next.certPem, 0o644);
    fs.renameSync(path.join(dir, 'server.key.new'), path.join(dir, 'server.key'));
    fs.renameSync(path.join(dir, 'server.pem.new'), path.join(dir, 'server.pem'));
    const newSerial = new X509Certificate(next.certPem).serialNumber;
    await waitFor('the new certificate', async () => (await servedSerial(gw)) === newSerial);
    assert.notEqual(oldSerial, newSerial);
    assert.equal(await codeOf(client.sign('dev-ec', 'ECDSA_SHA256', randomBytes(32))), 'OK', 'the existing connection continues');

    const before = sampleValue(await metrics(), 'hsmgw_config_reloads_total', { what: 'tls', result: 'failed' });
    const other = await issueLeaf(ca, { commonName: 'other', dns: ['localhost'], usage: 'server' });
    fs.writeFileSync(path.join(dir, 'server.pem'), other.certPem); // key no longer matches
    await waitFor('the refused TLS reload', async () => sampleValue(await metrics(), 'hsmgw_config_reloads_total', { what: 'tls', result: 'failed' }) > before);
    assert.equal(await servedSerial(gw), newSerial, 'the last good certificate keeps serving');
    assert.equal(await codeOf(gw.client().sign('dev-ec', 'ECDSA_SHA256', randomBytes(32))), 'OK', 'new connections still work');
  });
});

describe('rate-limit buckets across reloads', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hsmgw-buckets-'));
  const configFile = path.join(dir, 'config.yaml');
  let gw: TestGateway;
  const metrics = async (): Promise<ReturnType<typeof parsePrometheusText>> => parsePrometheusText(await (await fetch(gw.metricsUrl)).text());
  const reloads = async (what: string): Promise<number> => sampleValue(await metrics(), 'hsmgw_config_reloads_total', { what, result: 'ok' });
  const limitedRule = (burst: number): Record<string, unknown> => ({ identity: IDENTITIES.wildcard, keys: ['test-ec384'], rateLimit: { perSecond: 1, burst } });
  const editRules = (edit: (rules: unknown[]) => void): void => {
    const doc = parseYaml(fs.readFileSync(configFile, 'utf8')) as { authorization: { rules: unknown[] } };
    edit(doc.authorization.rules);
    fs.writeFileSync(`${configFile}.tmp`, toYaml(doc));
    fs.renameSync(`${configFile}.tmp`, configFile);
  };
  /** Five signatures in a row; how many the rate limit let through. */
  const burstOfFive = async (): Promise<number> => {
    const client = gw.client('wildcard');
    let ok = 0;
    for (let i = 0; i < 5; i++) if ((await codeOf(client.sign('test-ec384', 'ECDSA_SHA384', randomBytes(48)))) === 'OK') ok++;
    return ok;
  };
  const afterReload = async (what: 'config' | 'tls', change: () => void): Promise<void> => {
    const before = await reloads(what);
    change();
    await waitFor(`the ${what} reload`, async () => (await reloads(what)) > before);
  };

  before(async () => {
    fs.copyFileSync(path.join(TEST_STATE_DIR, 'pki', 'server.pem'), path.join(dir, 'server.pem'));
    gw = await startTestGateway({ configFile, watchIntervalMs: 100, tls: { cert: path.join(dir, 'server.pem') } });
    await afterReload('config', () => editRules((rules) => rules.unshift(limitedRule(5))));
  });
  after(async () => {
    await gw.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a reload caused by a TLS file or by another rule leaves an exhausted bucket exhausted; changing the limit starts a new bucket', async () => {
    assert.equal(await burstOfFive(), 5, 'the burst');
    assert.equal(await burstOfFive(), 0, 'exhausted (one token a second)');
    await afterReload('tls', () => {
      const cert = path.join(dir, 'server.pem');
      fs.writeFileSync(`${cert}.tmp`, fs.readFileSync(cert));
      fs.renameSync(`${cert}.tmp`, cert);
    });
    assert.ok(await burstOfFive() <= 2, 'a TLS reload does not refill the bucket');
    await afterReload('config', () => editRules((rules) => rules.push({ identity: IDENTITIES.nobody, keys: ['dev-ec'] })));
    assert.ok(await burstOfFive() <= 2, 'a change to another rule does not refill the bucket');
    await afterReload('config', () => editRules((rules) => { rules[0] = limitedRule(50); }));
    assert.equal(await burstOfFive(), 5, 'a changed limit starts a new bucket');
  });
});
