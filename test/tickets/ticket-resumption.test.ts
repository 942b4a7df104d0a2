/**
 * Fleet-wide resumption with real clients: keyless proxy processes sharing a scope's ticket keys
 * resume each other's sessions (openssl s_client -sess_out/-sess_in, TLS 1.3 and 1.2, and Node
 * tls.connect); a proxy without them does a full handshake. A ticket from the previous epoch still
 * resumes after a rotation, one past its decrypt window does not. An ungranted scope rejects with
 * PERMISSION_DENIED; close() gives a server its own key back; setSecureContext() keeps the keys.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { GatewayClient } from '../../client/gateway-client';
import { GatewayClientError } from '../../client/gateway-client-error';
import { startGatewayProcess, type GatewayProcess } from '../support/gateway-process';
import { ALL_TEST_KEYS } from '../support/test-gateway';
import { IDENTITIES } from '../support/test-environment';
import { sClient, startTicketProxy, tempDir, type TicketProxy } from './support/ticket-kit';

const RULES = [{ identity: IDENTITIES.dev, keys: ALL_TEST_KEYS, ticketKeyScopes: ['edge', 'rotation'] }];
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A Node client's session from one server, offered to another. */
function nodeConnect(port: number, ca: string, session?: Buffer): Promise<{ reused: boolean; session: Buffer | undefined }> {
  return new Promise((resolve, reject) => {
    let saved: Buffer | undefined;
    const socket = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ca, session, maxVersion: 'TLSv1.3' });
    socket.on('session', (s: Buffer) => { saved = s; });
    socket.on('error', reject);
    socket.resume();
    socket.on('end', () => resolve({ reused: socket.isSessionReused(), session: saved }));
  });
}

describe('shared ticket keys across keyless proxy processes', () => {
  let gw: GatewayProcess;
  let a: TicketProxy;
  let b: TicketProxy;
  let unshared: TicketProxy;
  const dir = tempDir('hsmgw-resume-');

  before(async () => {
    gw = await startGatewayProcess({ ticketKeys: { root: 'ticket-root' }, authorization: { rules: RULES } });
    [a, b, unshared] = await Promise.all([
      startTicketProxy(gw.clientOptions(), { scope: 'edge' }),
      startTicketProxy(gw.clientOptions(), { scope: 'edge', keylessMode: 'blocking' }),
      startTicketProxy(gw.clientOptions()),
    ]);
  });
  after(async () => {
    await Promise.all([a, b, unshared].map((p) => p?.stop()));
    await gw?.stop();
  });

  for (const protocol of ['-tls1_3', '-tls1_2'] as const) {
    test(`${protocol}: a session from proxy A resumes on proxy B, not on a proxy without the keys`, async () => {
      const session = path.join(dir, `session${protocol}.pem`);
      const first = await sClient(a.port, a.certFile, protocol, { out: session });
      assert.equal(first.kind, 'New', first.output);
      assert.match(first.output, /Verify return code: 0 \(ok\)/);
      const onB = await sClient(b.port, b.certFile, protocol, { in: session });
      assert.equal(onB.kind, 'Reused', onB.output);
      const onA = await sClient(a.port, a.certFile, protocol, { in: session });
      assert.equal(onA.kind, 'Reused', onA.output);
      const control = await sClient(unshared.port, unshared.certFile, protocol, { in: session });
      assert.equal(control.kind, 'New', control.output);
    });
  }

  test('Node tls.connect: a session from B resumes on A, not on the proxy without the keys', async () => {
    const ca = fs.readFileSync(a.certFile, 'utf8');
    const first = await nodeConnect(b.port, ca);
    assert.equal(first.reused, false);
    assert.ok(first.session, 'B sent a ticket');
    const again = await nodeConnect(a.port, ca, first.session);
    assert.equal(again.reused, true);
    const control = await nodeConnect(unshared.port, ca, first.session);
    assert.equal(control.reused, false);
  });

  test('an ungranted scope rejects with a GatewayClientError carrying PERMISSION_DENIED', async () => {
    const client = new GatewayClient(gw.clientOptions());
    const server = tls.createServer({});
    try {
      const err = await client.shareTicketKeys(server, { scope: 'api' }).then(() => assert.fail('shared'), (e: unknown) => e);
      assert.ok(err instanceof GatewayClientError, String(err));
      assert.equal(err.code, grpc.status.PERMISSION_DENIED);
    } finally {
      await client.close();
    }
  });

  test('a server in this process: setSecureContext() keeps the shared keys; close() gives it its own key back', async () => {
    const client = new GatewayClient(gw.clientOptions());
    const creds = await client.tlsCredentials('dev-ec');
    const server = tls.createServer({ ...creds }, (s) => s.end('x\n'));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    const session = path.join(dir, 'in-process.pem');
    try {
      const sharing = await client.shareTicketKeys(server, { scope: 'edge' });
      assert.equal((await sClient(a.port, a.certFile, '-tls1_3', { out: session })).kind, 'New');
      assert.equal((await sClient(port, a.certFile, '-tls1_3', { in: session })).kind, 'Reused');
      server.setSecureContext({ ...creds });
      assert.equal((await sClient(port, a.certFile, '-tls1_3', { in: session })).kind, 'Reused', 'after setSecureContext');
      const stats = sharing.stats();
      assert.ok(stats.resumedHandshakes >= 2 && stats.keys === 4, JSON.stringify(stats));
      await sharing.close();
      assert.equal((await sClient(port, a.certFile, '-tls1_3', { in: session })).kind, 'New', 'after close: the fleet ticket is unknown');
      const own = path.join(dir, 'own.pem');
      assert.equal((await sClient(port, a.certFile, '-tls1_3', { out: own })).kind, 'New');
      assert.equal((await sClient(port, a.certFile, '-tls1_3', { in: own })).kind, 'Reused', 'its own tickets resume again');
    } finally {
      server.close();
      await client.close();
    }
  });
});

describe('ticket key rotation (3 s epochs, tickets decrypt one epoch more)', () => {
  const EPOCH = 3;
  let gw: GatewayProcess;
  let a: TicketProxy;
  let b: TicketProxy;
  const dir = tempDir('hsmgw-rotation-');

  before(async () => {
    gw = await startGatewayProcess({ ticketKeys: { root: 'ticket-root', epochSeconds: EPOCH, decryptEpochs: 1 }, authorization: { rules: RULES } });
    [a, b] = await Promise.all([startTicketProxy(gw.clientOptions(), { scope: 'rotation' }), startTicketProxy(gw.clientOptions(), { scope: 'rotation' })]);
  });
  after(async () => {
    await Promise.all([a, b].map((p) => p?.stop()));
    await gw?.stop();
  });

  for (const protocol of ['-tls1_3', '-tls1_2'] as const) {
    test(`${protocol}: previous epoch's ticket resumes, one past the window does not`, async () => {
      // Start early in an epoch, so each step lands well inside the epoch it aims at.
      const untilNext = (): number => (EPOCH - ((Date.now() / 1000) % EPOCH)) * 1000;
      await sleep(untilNext() + 200);
      const issuedEpoch = Math.floor(Date.now() / 1000 / EPOCH);
      const session = path.join(dir, `rotation${protocol}.pem`);
      assert.equal((await sClient(a.port, a.certFile, protocol, { out: session })).kind, 'New');
      await sleep(untilNext() + 300);
      assert.equal(Math.floor(Date.now() / 1000 / EPOCH), issuedEpoch + 1);
      const previous = await sClient(b.port, b.certFile, protocol, { in: session });
      assert.equal(previous.kind, 'Reused', `ticket of the previous epoch\n${previous.output}`);
      await sleep(untilNext() + 300);
      assert.equal(Math.floor(Date.now() / 1000 / EPOCH), issuedEpoch + 2);
      const expired = await sClient(b.port, b.certFile, protocol, { in: session });
      assert.equal(expired.kind, 'New', `ticket past its decrypt window\n${expired.output}`);
    });
  }
});
