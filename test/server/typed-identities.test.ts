/**
 * Identities say where they came from (docs/SECURITY.md "How authorization is evaluated"): a
 * rule written as a URI matches only a URI SAN, a DNS rule only a DNS SAN, and a subject CN only
 * a rule that asks for it with `cn:`. Certificates from the real client CA carry the strings
 * that an untyped match would have confused.
 */
import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { GatewayClient } from '../../client/gateway-client';
import { GatewayClientError } from '../../client/gateway-client-error';
import { buildConfig } from '../../server/config/load-config';
import { ConfigError } from '../../server/config/config-error';
import { IDENTITIES, loadDevCa, writeIdentity, type ClientIdentity } from '../support/test-environment';
import { startTestGateway, type TestGateway } from '../support/test-gateway';

async function outcome(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'OK';
  } catch (err) {
    return err instanceof GatewayClientError ? `${err.codeName}: ${err.details}` : String(err);
  }
}

describe('typed identities', () => {
  let gw: TestGateway;
  let dir: string;
  const ids: Record<string, ClientIdentity> = {};
  const clients: GatewayClient[] = [];

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'typed-identities-'));
    gw = await startTestGateway({
      authorization: {
        rules: [
          { identity: IDENTITIES.dev, keys: ['dev-ec'] },
          { identity: 'cn:legacy-proxy', keys: ['dev-ec'] },
          { identity: 'dns-proxy.hsm-gateway.test', keys: ['dev-ec'] },
          { identity: 'spiffe://hsm-gateway.test/any/*', keys: ['dev-ec'] },
        ],
      },
    });
    const ca = await loadDevCa(path.dirname(gw.env.pki.ca));
    const issue = async (name: string, opts: { cn: string; uri?: string[]; dns?: string[] }): Promise<void> => {
      ids[name] = await writeIdentity(dir, name, ca, { commonName: opts.cn, uri: opts.uri, dns: opts.dns, usage: 'client' });
    };
    await issue('uri-in-cn', { cn: IDENTITIES.dev });
    await issue('uri-as-dns-san', { cn: 'x', dns: [IDENTITIES.dev] });
    await issue('legacy-cn', { cn: 'legacy-proxy' });
    await issue('legacy-name-as-dns', { cn: 'y', dns: ['legacy-proxy'] });
    await issue('dns-name-in-cn', { cn: 'dns-proxy.hsm-gateway.test' });
    await issue('dns-san', { cn: 'z', dns: ['dns-proxy.hsm-gateway.test'] });
    await issue('uri-prefix-as-dns', { cn: 'w', dns: ['spiffe://hsm-gateway.test/any/proxy'] });
    await issue('uri-prefix-as-uri', { cn: 'v', uri: ['spiffe://hsm-gateway.test/any/proxy'] });
  });
  after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await gw.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const sign = (name: string): Promise<string> => {
    const id = ids[name];
    const client = new GatewayClient({ endpoints: [gw.endpoint], ca: fs.readFileSync(gw.env.pki.ca), cert: fs.readFileSync(id.cert), key: fs.readFileSync(id.key), maxRetries: 0 });
    clients.push(client);
    return outcome(client.sign('dev-ec', 'ECDSA_SHA256', randomBytes(32)));
  };

  it('a CN that spells the URI identity, with no SAN, gets none of its grants', async () => {
    assert.match(await sign('uri-in-cn'), /^PERMISSION_DENIED: identity "cn:spiffe:\/\/hsm-gateway.dev\/proxy" may not use key "dev-ec"/);
  });

  it('a DNS SAN that spells the URI identity gets none of its grants, nor a DNS SAN under a URI wildcard', async () => {
    assert.match(await sign('uri-as-dns-san'), /^PERMISSION_DENIED/);
    assert.match(await sign('uri-prefix-as-dns'), /^PERMISSION_DENIED/);
    assert.equal(await sign('uri-prefix-as-uri'), 'OK', 'the URI SAN under the same wildcard is granted');
  });

  it('a CN identity is matched only by a cn: rule; a DNS name rule matches the DNS SAN, not a CN', async () => {
    assert.equal(await sign('legacy-cn'), 'OK', 'cn:legacy-proxy grants the certificate whose only name is that CN');
    assert.match(await sign('legacy-name-as-dns'), /^PERMISSION_DENIED/, 'the cn: rule does not match a DNS SAN of the same name');
    assert.equal(await sign('dns-san'), 'OK');
    assert.match(await sign('dns-name-in-cn'), /^PERMISSION_DENIED/, 'a DNS rule does not match a CN');
  });
});

describe('rule identities in the configuration', () => {
  const doc = (identity: string): Record<string, unknown> => ({
    pkcs11: { token: { label: 't' }, pin: { file: 'pin' } },
    keys: [{ name: 'web', label: 'web' }],
    tls: { cert: 'c', key: 'k', clientCa: 'ca' },
    authorization: { rules: [{ identity, keys: ['web'] }] },
  });

  it('a rule that could only ever have matched a CN is refused, and the error says to write cn:', () => {
    for (const identity of ['Legacy Proxy', 'CN=legacy-proxy', 'proxy@example.com', 'Legacy *']) {
      assert.throws(() => buildConfig(doc(identity), '/etc', {}), (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        assert.equal(err.field, 'authorization.rules[0].identity');
        assert.match(err.message, /could only ever match a certificate's subject CN.*write "cn:/);
        return true;
      }, identity);
    }
  });

  it('URIs, DNS names, wildcards and explicit uri:/dns:/cn: rules are accepted', () => {
    for (const identity of ['spiffe://prod/ns/edge/sa/proxy', 'spiffe://prod/*', 'proxy.example.com', 'proxy-*', '*', 'cn:Legacy Proxy', 'uri:urn:x', 'dns:proxy', 'cn:*']) {
      assert.equal(buildConfig(doc(identity), '/etc', {}).authorization.rules[0].identity, identity);
    }
  });
});
