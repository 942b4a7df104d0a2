// The full rotation, end to end, with the real CLI, a real gateway process and a keyless HTTPS
// server under light load: generate web-2027, CSR through the gateway, CA-issued certificate
// installed on the token, alias `web` switched from web-2026 to web-2027 by editing the config
// file (live reload, no restart, no SIGHUP). No handshake may fail; new connections get the new
// certificate; a connection opened before the switch keeps working with the old one.
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import * as fs from 'node:fs';
import * as https from 'node:https';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import type { TLSSocket } from 'node:tls';
import type { GatewayClient } from '../../client/gateway-client';
import { followAlias, type AliasFollower } from './support/alias-follower';
import {
  cli, cliJson, createLifecycleState, createOpensslCa, devClient, removeState, startGatewayProcess, writeGatewayConfig,
  type GatewayKeyEntry, type GatewayProcess, type LifecycleState,
} from './support/lifecycle-kit';

const HOST = 'www.example.test';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Handshake { at: number; serial?: string; error?: string }

/** `workers` clients doing fresh HTTPS handshakes (no keep-alive) back to back, with a pause. */
function startLoad(port: number, ca: string, workers: number, pauseMs: number): { results: Handshake[]; stop(): Promise<void> } {
  const results: Handshake[] = [];
  let running = true;
  const one = (): Promise<void> => new Promise((resolve) => {
    const req = https.get({ host: '127.0.0.1', port, servername: HOST, ca, agent: false, path: '/', timeout: 10_000 }, (res) => {
      const serial = (res.socket as TLSSocket).getPeerCertificate().serialNumber;
      res.resume();
      res.on('end', () => {
        results.push(res.statusCode === 200 ? { at: Date.now(), serial } : { at: Date.now(), error: `HTTP ${res.statusCode}` });
        resolve();
      });
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (err) => {
      results.push({ at: Date.now(), error: err.message });
      resolve();
    });
  });
  const loops = Array.from({ length: workers }, async () => {
    while (running) {
      await one();
      await sleep(pauseMs);
    }
  });
  return { results, stop: async () => { running = false; await Promise.all(loops); } };
}

async function waitFor(what: string, timeoutMs: number, check: () => Promise<boolean> | boolean): Promise<number> {
  const started = Date.now();
  for (;;) {
    try {
      if (await check()) return Date.now() - started;
    } catch {
      // not yet
    }
    if (Date.now() - started > timeoutMs) assert.fail(`${what}: not within ${timeoutMs} ms`);
    await sleep(100);
  }
}

describe('key rotation without downtime', () => {
  let state: LifecycleState | undefined;
  let gateway: GatewayProcess | undefined;
  let client: GatewayClient | undefined;
  let server: https.Server | undefined;
  let follower: AliasFollower | undefined;

  after(async () => {
    follower?.stop();
    server?.closeAllConnections();
    server?.close();
    await client?.close();
    await gateway?.stop();
    removeState(state);
  });

  test('generate, CSR, install, switch alias web: web-2026 -> web-2027 live; keyless HTTPS under load never fails a handshake', { timeout: 120_000 }, async () => {
    const s = await createLifecycleState('rotation');
    state = s;
    const file = (name: string): string => path.join(s.dir, name);
    const ca = await createOpensslCa(file('ca'), 'Rotation Test');
    const keys = (web: string, extra: GatewayKeyEntry[] = []): GatewayKeyEntry[] => [{ name: 'web-2026', label: 'web-2026' }, ...extra, { name: 'web', label: web }];
    const refresh = { certificateRefreshMs: 500 };

    // Before: web -> web-2026, with a CA-issued certificate.
    await cliJson(s, ['key', 'generate', '--name', 'web-2026', '--type', 'ec-p256']);
    const configFile = writeGatewayConfig(s, 'gateway.yaml', keys('web-2026'), refresh);
    gateway = await startGatewayProcess(s, configFile);
    const gw = gateway;
    const issueAndInstall = async (key: string): Promise<string> => {
      const csr = file(`${key}.csr`);
      const made = await cli(s, ['csr', '--endpoint', gw.endpoint, '--key', key, '--subject', `CN=${HOST}`, '--san', `dns:${HOST}`, '--out', csr]);
      assert.equal(made.code, 0, made.stderr);
      const leaf = await ca.issue(csr, 30, HOST);
      const chainFile = file(`${key}-chain.pem`);
      fs.writeFileSync(chainFile, leaf + ca.intermediatePem);
      const installed = await cliJson<{ stored: number; gatewayNames: string[] }>(s, ['cert', 'install', '--name', key, '--chain', chainFile, '--config', configFile]);
      assert.equal(installed.stored, 2);
      return new X509Certificate(leaf).serialNumber;
    };
    const oldSerial = await issueAndInstall('web-2026');
    client = devClient(s, gw.endpoint);
    const c = client;
    // No SIGHUP: the gateway's periodic chain refresh (pkcs11.certificateRefreshMs) picks it up.
    await waitFor('GetKey(web) returns the installed chain', 5_000, async () => (await c.getKey('web', { refresh: true })).certificateChain.length === 2);

    // The keyless HTTPS server follows the alias; light load starts.
    server = https.createServer((_req, res) => res.end('ok\n'));
    const srv = server;
    srv.keepAliveTimeout = 60_000;
    const tlsErrors: string[] = [];
    srv.on('tlsClientError', (err) => tlsErrors.push(err.message));
    follower = await followAlias(c, 'web', srv, 250);
    assert.equal(follower.current, 'web-2026');
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const port = (srv.address() as AddressInfo).port;
    const load = startLoad(port, ca.rootPem, 2, 20);
    // Negative control: a server that signs with the ALIAS itself and refreshes its certificate
    // only later. Between the switch and its refresh it must fail handshakes (the new key signs
    // for the old certificate), which shows the load would catch a broken rotation.
    const naive = https.createServer((_req, res) => res.end('ok\n'));
    naive.setSecureContext(await c.tlsCredentials('web'));
    naive.on('tlsClientError', () => undefined);
    await new Promise<void>((r) => naive.listen(0, '127.0.0.1', r));
    const naiveLoad = startLoad((naive.address() as AddressInfo).port, ca.rootPem, 1, 20);

    // A connection opened before the rotation (keep-alive), used again after it.
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
    const onKeptConnection = (): Promise<{ serial: string; socket: TLSSocket }> => new Promise((resolve, reject) => {
      https.get({ host: '127.0.0.1', port, servername: HOST, ca: ca.rootPem, agent, path: '/' }, (res) => {
        const socket = res.socket as TLSSocket;
        res.resume();
        res.on('end', () => resolve({ serial: socket.getPeerCertificate().serialNumber, socket }));
      }).on('error', reject);
    });
    const kept = await onKeptConnection();
    assert.equal(kept.serial, oldSerial);
    await sleep(500);

    // 1. A new key.
    await cliJson(s, ['key', 'generate', '--name', 'web-2027', '--type', 'ec-p384']);
    // The gateway serves it under its own name after a config edit (reloaded on file change).
    writeGatewayConfig(s, 'gateway.yaml', keys('web-2026', [{ name: 'web-2027', label: 'web-2027' }]), refresh);
    await waitFor('web-2027 configured by live reload', 10_000, async () => (await c.getKey('web-2027', { refresh: true })).curve === 'P-384');
    // 2. CSR through the gateway, 3. certificate from the CA installed on the token.
    const newSerial = await issueAndInstall('web-2027');
    await waitFor('GetKey(web-2027) returns its chain', 5_000, async () => (await c.getKey('web-2027', { refresh: true })).certificateChain.length === 2);
    assert.equal(follower.current, 'web-2026', 'nothing changed for the server yet');

    // 4. Switch the alias in the config file: live reload.
    const switchedAt = Date.now();
    writeGatewayConfig(s, 'gateway.yaml', keys('web-2027', [{ name: 'web-2027', label: 'web-2027' }]), refresh);
    const tookMs = await waitFor('new handshakes get the web-2027 certificate', 15_000, () => load.results.some((h) => h.at > switchedAt && h.serial === newSerial));
    await sleep(1000);
    naive.setSecureContext(await c.tlsCredentials('web'));
    await sleep(300);
    await Promise.all([load.stop(), naiveLoad.stop()]);
    naive.closeAllConnections();
    naive.close();
    const naiveFailed = naiveLoad.results.filter((h) => h.error);
    assert.ok(naiveFailed.length > 0, 'negative control: signing with the alias while serving the old certificate fails handshakes');
    assert.equal(naiveLoad.results[naiveLoad.results.length - 1].serial, newSerial, 'negative control recovers once it serves the new certificate');

    const failed = load.results.filter((h) => h.error);
    assert.deepEqual(failed, [], `failed handshakes: ${JSON.stringify(failed.slice(0, 5))}`);
    assert.deepEqual(tlsErrors, []);
    assert.deepEqual(follower.errors, []);
    assert.deepEqual(follower.history, ['web-2026', 'web-2027']);
    // The follower's handshakes ran in the default mode, non-blocking, through paused jobs.
    assert.match(await (await c.keylessMetricsRegistry()).metrics(), /^hsmgw_keyless_bridges\{mode="non-blocking"\} 1$/m);
    assert.match(await (await c.keylessMetricsRegistry()).metrics(), /^hsmgw_keyless_async_jobs_resumed_total [1-9]\d+$/m);
    assert.ok(load.results.length >= 50, `light load ran (${load.results.length} handshakes)`);
    assert.ok(load.results.some((h) => h.serial === oldSerial), 'handshakes served the old certificate before the switch');
    const firstNew = load.results.findIndex((h) => h.serial === newSerial);
    assert.ok(load.results.slice(firstNew).every((h) => h.serial === newSerial), 'once switched, every new handshake gets the new certificate');
    assert.ok(load.results.slice(firstNew).length >= 10, 'handshakes with the new key after the switch');

    // The connection from before the rotation is untouched: same socket, old certificate.
    const again = await onKeptConnection();
    assert.equal(again.socket, kept.socket, 'the same TLS connection');
    assert.equal(again.serial, oldSerial);
    agent.destroy();

    // The token: both keys with their certificates, web names the new key.
    const listed = await cliJson<Array<{ label: string; gatewayNames: string[]; certificate?: { serial: string } }>>(s, ['key', 'list', '--config', configFile]);
    const byLabel = new Map(listed.map((k) => [k.label, k]));
    assert.deepEqual(byLabel.get('web-2027')?.gatewayNames, ['web-2027', 'web']);
    assert.deepEqual(byLabel.get('web-2026')?.gatewayNames, ['web-2026']);
    assert.equal(byLabel.get('web-2027')?.certificate?.serial, newSerial.toLowerCase());
    process.stdout.write(`# rotation: ${load.results.length} handshakes, 0 failed; new certificate served ${tookMs} ms after the alias switch; `
      + `negative control (alias signing, late refresh): ${naiveFailed.length}/${naiveLoad.results.length} failed\n`);
  });
});
