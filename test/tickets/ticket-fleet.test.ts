/**
 * Shared ticket keys beyond one Node major and one process: keyless proxies on Node 22 and 24
 * (each with its own build of the addon, both OpenSSL 3.5) resume each other's sessions, as do
 * Node 20 ones, and two runKeylessCluster fleets of 2 workers each resume each other's sessions
 * whichever worker answers.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { freePort } from '../support/free-port';
import { startGatewayProcess, type GatewayProcess } from '../support/gateway-process';
import { IDENTITIES, REPO_ROOT } from '../support/test-environment';
import { ALL_TEST_KEYS } from '../support/test-gateway';
import { sClient, startTicketProxy, tempDir, type TicketProxy } from './support/ticket-kit';

const RULES = [{ identity: IDENTITIES.dev, keys: ALL_TEST_KEYS, ticketKeyScopes: ['fleet'] }];
const MAJORS = ['20', '22', '24'];

function nodeFor(major: string): string {
  return major === '20' ? process.execPath : path.join(REPO_ROOT, 'node_modules', `node${major}`, 'bin', 'node');
}

describe('shared ticket keys across Node lines and clusters', () => {
  let gw: GatewayProcess;
  const dir = tempDir('hsmgw-fleet-');

  before(async () => {
    gw = await startGatewayProcess({ ticketKeys: { root: 'ticket-root' }, authorization: { rules: RULES } });
  });
  after(async () => { await gw?.stop(); });

  // Node 20 links OpenSSL 3.0 and Node 22/24 OpenSSL 3.5, whose sessions do not resume on each
  // other (docs/TICKET-KEYS.md): a fleet runs one OpenSSL line. Within a line, every Node major.
  test('Node 22 and 24 proxies (OpenSSL 3.5) resume each other\'s sessions, and Node 20 ones each other\'s (TLS 1.3 and 1.2)', async () => {
    for (const major of MAJORS) {
      assert.ok(fs.existsSync(nodeFor(major)), `node ${major} is missing (devDependency node${major})`);
      assert.ok(fs.existsSync(path.join(REPO_ROOT, 'client', 'keyless', 'native', 'build', `node-${major}`, 'keyless.node')), `addon for node ${major}: run node scripts/build-addon.js --all`);
    }
    const majors = ['22', '24', '20', '20'];
    const proxies: TicketProxy[] = await Promise.all(majors.map((major) => startTicketProxy(gw.clientOptions(), { scope: 'fleet', node: nodeFor(major) })));
    try {
      for (const protocol of ['-tls1_3', '-tls1_2'] as const) {
        for (const [from, to] of [[0, 1], [1, 0], [2, 3]]) {
          const session = path.join(dir, `node${majors[from]}-${from}${protocol}.pem`);
          assert.equal((await sClient(proxies[from].port, proxies[from].certFile, protocol, { out: session })).kind, 'New');
          const resumed = await sClient(proxies[to].port, proxies[to].certFile, protocol, { in: session });
          assert.equal(resumed.kind, 'Reused', `node ${majors[from]} -> node ${majors[to]} ${protocol}\n${resumed.output}`);
        }
      }
    } finally {
      await Promise.all(proxies.map((p) => p.stop()));
    }
  });

  test('two runKeylessCluster fleets (2 workers each) resume each other\'s sessions', async () => {
    const child = path.join(__dirname, 'support', 'ticket-cluster-child.js');
    const ports = [await freePort(), await freePort()];
    const clusters = ports.map((port) => spawn(process.execPath, [child], {
      env: { ...process.env, TICKET_CLUSTER: JSON.stringify({ client: gw.clientOptions(), port, scope: 'fleet' }) }, stdio: ['ignore', 'pipe', 'inherit'],
    }));
    try {
      await Promise.all(clusters.map((c) => new Promise<void>((resolve, reject) => {
        let out = '';
        c.stdout?.on('data', (b: Buffer) => { out += b.toString(); if (out.includes('ready')) resolve(); });
        c.once('exit', (code) => reject(new Error(`cluster exited with ${code}: ${out}`)));
      })));
      const certFile = path.join(dir, 'dev-ec.pem');
      const client = gw.client();
      const key = await client.getKey('dev-ec');
      fs.writeFileSync(certFile, `-----BEGIN CERTIFICATE-----\n${key.certificateChain[0].toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '')}\n-----END CERTIFICATE-----\n`);
      // Several sessions, so both workers of each fleet issue and accept tickets.
      for (let i = 0; i < 4; i++) {
        const session = path.join(dir, `cluster-${i}.pem`);
        assert.equal((await sClient(ports[i % 2], certFile, '-tls1_3', { out: session })).kind, 'New');
        for (let j = 0; j < 2; j++) {
          const resumed = await sClient(ports[(i + 1) % 2], certFile, '-tls1_3', { in: session });
          assert.equal(resumed.kind, 'Reused', resumed.output);
        }
      }
    } finally {
      await Promise.all(clusters.map((c) => new Promise<void>((resolve) => {
        if (c.exitCode !== null) return resolve();
        c.removeAllListeners('exit');
        c.once('exit', () => resolve());
        c.kill('SIGTERM');
      })));
    }
  });
});
