// Ed25519 end to end against real SoftHSM2 (CKM_EDDSA): key generation through the CLI, signing
// through the gateway (message input only, verified with node:crypto), GetKey, authorization,
// rate limits, metrics and audit, CSR and self-signed certificate checked by openssl, EdDSA JWS,
// and keyless TLS with an Ed25519 certificate checked by openssl s_client, curl and Node.
import assert from 'node:assert/strict';
import { createHash, createPublicKey, randomBytes, verify, X509Certificate } from 'node:crypto';
import * as fs from 'node:fs';
import * as https from 'node:https';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as tls from 'node:tls';
import { status } from '@grpc/grpc-js';
import { parse as parseYaml, stringify as toYaml } from 'yaml';

import type { GatewayClient } from '../../client/gateway-client';
import { GatewayClientError } from '../../client/gateway-client-error';
import { GatewaySigner } from '../../client/index';
import { KeyType, SignatureAlgorithm } from '../../proto/generated/hsmgateway/v1/signer';
import {
  keylessPem, sClient, scratchDir, startAgent, startNginx, writeOpensslConf, type AgentProcess, type ServerProcess,
} from '../proxies/support/proxy-kit';
import { freePort } from '../support/free-port';
import {
  cli, cliJson, createLifecycleState, devClient, listTokenObjects, objectBlock, removeState, run, startGatewayProcess, writeGatewayConfig,
  type GatewayProcess, type LifecycleState,
} from './support/lifecycle-kit';

const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex'); // SEQUENCE { AlgorithmIdentifier { 1.3.101.112 }, BIT STRING (32 bytes) }

describe('Ed25519 end to end', () => {
  let state: LifecycleState;
  let gateway: GatewayProcess;
  let client: GatewayClient;
  let publicKey: Buffer;
  const file = (name: string): string => path.join(state.dir, name);

  before(async () => {
    state = await createLifecycleState('ed25519');
    await cliJson(state, ['key', 'generate', '--name', 'web-ed', '--type', 'ed25519']);
    await cliJson(state, ['key', 'generate', '--name', 'other-ed', '--type', 'ed25519']);
    const config = writeGatewayConfig(state, 'gateway.yaml', [{ name: 'web-ed', label: 'web-ed' }, { name: 'other-ed', label: 'other-ed' }], { logLevel: 'info' });
    // Audit on (the lifecycle kit turns it off); the client's rule leaves other-ed out and carries
    // a rate limit: authorization and limits apply to Ed25519 keys as to any key.
    const doc = parseYaml(fs.readFileSync(config, 'utf8')) as { logging: Record<string, unknown>; authorization: { rules: Array<{ keys: string[] }> } };
    doc.logging.audit = true;
    const rule = doc.authorization.rules[0];
    doc.authorization.rules[0] = { ...rule, keys: rule.keys.filter((k) => k !== 'other-ed'), rateLimit: { perSecond: 50, burst: 60 } } as typeof rule;
    fs.writeFileSync(config, toYaml(doc));
    gateway = await startGatewayProcess(state, config);
    client = devClient(state, gateway.endpoint);
    publicKey = (await client.getKey('web-ed')).publicKey;
  });

  after(async () => {
    client?.close();
    await gateway?.stop();
    removeState(state);
  });

  test('key generate --type ed25519: CKK_EC_EDWARDS on the token, sensitive and never extractable', async () => {
    const listing = await listTokenObjects(state, 'privkey');
    const block = objectBlock(listing, 'web-ed');
    assert.match(block, /EC_EDWARDS|EC-EDWARDS|edwards/i, block);
    assert.match(block, /Access:\s+.*sensitive.*never extractable/, block);
    const listed = await cliJson<Array<{ label: string; type: string; curve?: string }>>(state, ['key', 'list']);
    assert.deepEqual(listed.filter((k) => k.label === 'web-ed').map((k) => [k.type, k.curve]), [['ED25519', 'Ed25519']]);
  });

  test('GetKey: KEY_TYPE_ED25519, curve Ed25519, the RFC 8410 SPKI and the ED25519 algorithm', async () => {
    const info = await client.getKey('web-ed', { refresh: true });
    assert.equal(info.type, 'ED25519');
    assert.equal(info.curve, 'Ed25519');
    assert.deepEqual(info.algorithms, ['ED25519']);
    assert.equal(info.publicKey.length, 44);
    assert.deepEqual(info.publicKey.subarray(0, 12), ED25519_SPKI_PREFIX);
    assert.equal(createPublicKey({ key: info.publicKey, format: 'der', type: 'spki' }).asymmetricKeyType, 'ed25519');
    assert.equal(KeyType.KEY_TYPE_ED25519, 3);
  });

  test('Sign with ED25519 over a message verifies with node:crypto; another message does not', async () => {
    const key = createPublicKey({ key: publicKey, format: 'der', type: 'spki' });
    for (const message of [Buffer.from('hello ed25519'), randomBytes(1000), Buffer.from([0])]) {
      const unary = await client.sign('web-ed', 'ED25519', message);
      assert.equal(unary.length, 64);
      assert.ok(verify(null, message, key, unary), 'unary signature verifies');
      assert.equal(verify(null, Buffer.concat([message, Buffer.from('!')]), key, unary), false, 'negative control');
      const streamed = await client.signStreamed('web-ed', 'ED25519', message);
      assert.ok(verify(null, message, key, streamed), 'SignStream signature verifies');
    }
  });

  test('a digest input is refused with INVALID_ARGUMENT, saying why', async () => {
    const digest = createHash('sha256').update('x').digest();
    const input = { $case: 'digest' as const, value: digest };
    const error = await new Promise<GatewayClientError>((resolve) => {
      const stream = (client as unknown as { endpoints: Array<{ stream: { submit(...args: unknown[]): void } }> }).endpoints[0].stream;
      stream.submit('web-ed', SignatureAlgorithm.ED25519, input, 5000, (e: GatewayClientError | null) => resolve(e as GatewayClientError));
    });
    assert.equal(error.code, status.INVALID_ARGUMENT);
    assert.match(error.details, /ED25519 signs the message itself: send message, not digest/);
    await assert.rejects(client.sign('web-ed', 'ECDSA_SHA256', digest), (e: GatewayClientError) => e.code === status.INVALID_ARGUMENT && /does not fit key "web-ed"/.test(e.details));
    // EdDSA signs the message itself; an empty one cannot be handed to the HSM.
    await assert.rejects(client.sign('web-ed', 'ED25519', Buffer.alloc(0)), (e: GatewayClientError) => e.code === status.INVALID_ARGUMENT && /message is empty/.test(e.details));
  });

  test('authorization and rate limits apply: a key outside the rule is PERMISSION_DENIED, a burst past the limit RESOURCE_EXHAUSTED', async () => {
    await assert.rejects(client.sign('other-ed', 'ED25519', Buffer.from('x')), (e: GatewayClientError) => e.code === status.PERMISSION_DENIED);
    // The rule's burst is 60 at 50/s: 200 at once are well past it.
    const results = await Promise.allSettled(Array.from({ length: 200 }, () => client.signStreamed('web-ed', 'ED25519', Buffer.from('burst'))));
    const refused = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    assert.ok(refused.length > 0, 'the rate limit refused some');
    for (const r of refused) assert.equal((r.reason as GatewayClientError).code, status.RESOURCE_EXHAUSTED);
    await new Promise((resolve) => setTimeout(resolve, 1500)); // the bucket refills
  });

  test('metrics and the audit line name ED25519; digest_fp is the SHA-256 of the message, never its bytes', async () => {
    const message = Buffer.from('audit me: secret message bytes');
    await client.sign('web-ed', 'ED25519', message);
    await new Promise((resolve) => setTimeout(resolve, 200));
    const http = /"msg":"gateway listening","grpc":"[^"]+","http":"([^"]+)"/.exec(gateway.output())?.[1];
    const metrics = await (await fetch(`http://${http}/metrics`)).text();
    assert.match(metrics, /hsmgw_sign_requests_total\{key="web-ed",algorithm="ED25519",code="OK"\} [1-9]/);
    const expected = createHash('sha256').update(message).digest().subarray(0, 8).toString('hex');
    const line = gateway.output().split('\n').find((l) => l.includes('"audit"') && l.includes(`"digest_fp":"${expected}"`));
    assert.ok(line, `an audit line with digest_fp ${expected}`);
    assert.match(line, /"algorithm":"ED25519"/);
    assert.doesNotMatch(gateway.output(), new RegExp(message.subarray(0, 8).toString('hex')));
  });

  test('csr and cert self-sign for an Ed25519 key: openssl req -verify and openssl verify accept them', async () => {
    const csr = file('web-ed.csr');
    const r = await cli(state, ['csr', '--endpoint', gateway.endpoint, '--key', 'web-ed', '--subject', 'CN=ed.example.test', '--san', 'dns:ed.example.test', '--out', csr]);
    assert.equal(r.code, 0, r.stderr);
    const verified = await run('openssl', ['req', '-in', csr, '-verify', '-noout', '-text']);
    assert.equal(verified.code, 0, verified.stderr);
    assert.match(verified.stdout, /Signature Algorithm: ED25519/);
    assert.match(verified.stderr + verified.stdout, /verify OK/);

    const cert = file('web-ed.pem');
    const s = await cli(state, ['cert', 'self-sign', '--endpoint', gateway.endpoint, '--key', 'web-ed', '--days', '7', '--san', 'dns:localhost,ip:127.0.0.1', '--out', cert]);
    assert.equal(s.code, 0, s.stderr);
    const v = await run('openssl', ['verify', '-CAfile', cert, cert]);
    assert.equal(v.code, 0, v.stdout + v.stderr);
    const x509 = new X509Certificate(fs.readFileSync(cert));
    assert.ok(x509.publicKey.export({ type: 'spki', format: 'der' }).equals(publicKey), 'the certificate carries the HSM key');
    assert.ok(x509.verify(x509.publicKey), 'node:crypto verifies the self-signature');
  });

  test('GatewaySigner: an EdDSA JWS whose signature verifies', async () => {
    const signer = await GatewaySigner.create(client, 'web-ed');
    assert.equal(signer.jwsAlgorithm, 'EdDSA');
    const jwt = await signer.signJwt({ sub: 'ed25519-test' });
    const [header, payload, signature] = jwt.split('.');
    assert.equal(JSON.parse(Buffer.from(header, 'base64url').toString()).alg, 'EdDSA');
    const key = createPublicKey({ key: publicKey, format: 'der', type: 'spki' });
    assert.ok(verify(null, Buffer.from(`${header}.${payload}`), key, Buffer.from(signature, 'base64url')));
  });

  describe('keyless TLS with the Ed25519 certificate', () => {
    let server: https.Server;
    let port: number;
    let caFile: string;
    const errors: string[] = [];

    before(async () => {
      caFile = file('web-ed.pem');
      if (!fs.existsSync(caFile)) {
        const s = await cli(state, ['cert', 'self-sign', '--endpoint', gateway.endpoint, '--key', 'web-ed', '--days', '7', '--san', 'dns:localhost,ip:127.0.0.1', '--out', caFile]);
        assert.equal(s.code, 0, s.stderr);
      }
      const creds = await client.tlsCredentials('web-ed', { cert: fs.readFileSync(caFile, 'utf8') });
      server = https.createServer(creds, (_req, res) => res.end('hello from an Ed25519 keyless key\n'));
      server.on('tlsClientError', (error) => errors.push(error.message));
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      port = (server.address() as AddressInfo).port;
    });

    after(async () => {
      server?.closeAllConnections();
      await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    });

    for (const version of ['-tls1_3', '-tls1_2']) {
      test(`openssl s_client ${version} -verify_return_error: signature type ed25519, verification OK`, async () => {
        const r = await run('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-servername', 'localhost', version, '-verify_return_error', '-CAfile', caFile, '-brief'], { input: '' });
        assert.equal(r.code, 0, r.stdout + r.stderr);
        assert.match(r.stdout + r.stderr, /Signature type: ed25519/);
        assert.match(r.stdout + r.stderr, /Verification: OK/);
      });
    }

    test('curl and Node tls.connect verify the server', async () => {
      const c = await run('curl', ['-sS', '--cacert', caFile, `https://localhost:${port}/`]);
      assert.equal(c.code, 0, c.stderr);
      assert.match(c.stdout, /hello from an Ed25519 keyless key/);
      const authorized = await new Promise<boolean>((resolve, reject) => {
        const socket = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ca: fs.readFileSync(caFile) }, () => {
          resolve(socket.authorized);
          socket.end();
        });
        socket.once('error', reject);
      });
      assert.equal(authorized, true);
      assert.deepEqual(errors, []);
    });

    test('nginx through the agent serves the Ed25519 key: the certificate installed on the token, keyless-pem, s_client TLS 1.3 and 1.2', async () => {
      const install = await cli(state, ['cert', 'install', '--name', 'web-ed', '--chain', caFile]);
      assert.equal(install.code, 0, install.stderr);
      gateway.hup(); // the gateway re-reads the token's certificates at once
      const gatewayAddress = gateway.endpoint.replace('127.0.0.1', 'localhost');
      const dir = scratchDir('nginx-ed25519');
      const endpoint = { endpoint: gatewayAddress, env: { pki: { ca: state.pki.ca, clients: { dev: { cert: state.pki.clientCert, key: state.pki.clientKey } } } } };
      let agent: AgentProcess | undefined;
      let nginx: ServerProcess | undefined;
      try {
        let pems: Awaited<ReturnType<typeof keylessPem>> | undefined;
        for (let i = 0; i < 50 && pems === undefined; i++) {
          pems = await keylessPem(endpoint, 'web-ed', dir).catch(async (error: unknown) => {
            if (!String(error).includes('no certificate on the token')) throw error;
            await new Promise((resolve) => setTimeout(resolve, 100));
            return undefined;
          });
        }
        assert.ok(pems, 'the installed certificate was served after SIGHUP');
        agent = await startAgent(dir, [gatewayAddress], endpoint, { metricsPort: await freePort() });
        const nginxPort = await freePort();
        nginx = await startNginx(dir, writeOpensslConf(dir, agent.socket), [{ port: nginxPort, serverName: 'localhost', files: pems }]);
        for (const version of ['-tls1_3', '-tls1_2']) {
          const r = await sClient(nginxPort, 'localhost', caFile, [version]);
          assert.equal(r.code, 0, r.output);
          assert.match(r.output, /Signature type: ed25519/);
          assert.match(r.output, /Verification: OK/);
        }
        const metrics = await (await fetch(agent.metricsUrl)).text();
        assert.match(metrics, /^hsmgw_agent_sign_requests_total\{result="OK"\} [2-9]/m, 'both handshakes were signed through the agent');
      } finally {
        await nginx?.stop();
        await agent?.stop();
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });
  });
});
