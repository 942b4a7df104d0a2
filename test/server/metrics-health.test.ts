import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { protoPath as healthProtoPath } from 'grpc-health-check';
import * as fs from 'node:fs';
import { parsePrometheusText, sampleValue } from '../support/prometheus-text';
import { startTestGateway, type TestGateway } from '../support/test-gateway';

interface HealthResponse { status: string }
interface HealthClient extends grpc.Client {
  check(req: { service: string }, md: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res: HealthResponse) => void): void;
  watch(req: { service: string }): grpc.ClientReadableStream<HealthResponse>;
}

function healthClient(gw: TestGateway): HealthClient {
  const def = protoLoader.loadSync(healthProtoPath, { enums: String });
  const pkg = grpc.loadPackageDefinition(def) as unknown as { grpc: { health: { v1: { Health: new (addr: string, creds: grpc.ChannelCredentials) => HealthClient } } } };
  const { cert, key } = gw.env.pki.clients.dev;
  return new pkg.grpc.health.v1.Health(gw.endpoint, grpc.credentials.createSsl(fs.readFileSync(gw.env.pki.ca), fs.readFileSync(key), fs.readFileSync(cert)));
}

async function scrape(gw: TestGateway): Promise<ReturnType<typeof parsePrometheusText>> {
  const res = await fetch(gw.metricsUrl);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  return parsePrometheusText(await res.text());
}

describe('metrics, health and shutdown', () => {
  it('/metrics counters match the requests made, by key, algorithm and code', async () => {
    const gw = await startTestGateway();
    try {
      const client = gw.client();
      const before = await scrape(gw);
      for (let i = 0; i < 7; i++) await client.sign('dev-ec', 'ECDSA_SHA256', randomBytes(32));
      for (let i = 0; i < 3; i++) await client.sign('dev-rsa', 'RSA_PSS_SHA384', randomBytes(48));
      await assert.rejects(client.sign('dev-ec', 'ECDSA_SHA256', randomBytes(5)));
      await assert.rejects(gw.client('nobody').sign('dev-ec', 'ECDSA_SHA256', randomBytes(32)));
      const stream = gw.rawClient().signStream();
      const streamDone = new Promise((r) => stream.on('end', r));
      stream.on('data', () => undefined);
      for (let i = 0; i < 4; i++) stream.write({ key: 'dev-ec', algorithm: 8, input: { $case: 'digest', value: randomBytes(48) }, requestId: BigInt(i) });
      stream.end();
      await streamDone;

      const after = await scrape(gw);
      const delta = (labels: Record<string, string>): number => sampleValue(after, 'hsmgw_sign_requests_total', labels) - sampleValue(before, 'hsmgw_sign_requests_total', labels);
      assert.equal(delta({ key: 'dev-ec', algorithm: 'ECDSA_SHA256', code: 'OK' }), 7);
      assert.equal(delta({ key: 'dev-rsa', algorithm: 'RSA_PSS_SHA384', code: 'OK' }), 3);
      assert.equal(delta({ key: 'dev-ec', algorithm: 'ECDSA_SHA384', code: 'OK' }), 4);
      assert.equal(delta({ key: 'dev-ec', algorithm: 'ECDSA_SHA256', code: 'INVALID_ARGUMENT' }), 1);
      assert.equal(delta({ key: '-', algorithm: 'ECDSA_SHA256', code: 'PERMISSION_DENIED' }), 1);
      assert.equal(delta({}), 16, 'every request counted once');
      assert.equal(sampleValue(after, 'hsmgw_authorization_denials_total', { reason: 'key' }), 1);
      assert.equal(sampleValue(after, 'hsmgw_hsm_operation_seconds_count') - sampleValue(before, 'hsmgw_hsm_operation_seconds_count'), 14);
      assert.equal(sampleValue(after, 'hsmgw_session_wait_seconds_count') - sampleValue(before, 'hsmgw_session_wait_seconds_count'), 14);
      assert.equal(sampleValue(after, 'hsmgw_sign_request_duration_seconds_count', { rpc: 'SignStream' }), 4);
      assert.equal(sampleValue(after, 'hsmgw_sign_request_duration_seconds_count', { rpc: 'Sign' }), 12);
      assert.equal(sampleValue(after, 'hsmgw_in_flight_requests'), 0);
      assert.equal(sampleValue(after, 'hsmgw_hsm_ready'), 1);
      assert.ok(sampleValue(after, 'hsmgw_pool_sessions') >= 1);
      assert.equal(sampleValue(after, 'hsmgw_pool_sessions_max'), 8);
      assert.equal(after.types.get('hsmgw_hsm_operation_seconds'), 'histogram');
      assert.ok(sampleValue(after, 'hsmgw_process_resident_memory_bytes') > 0, 'default process metrics are exported');
      assert.ok(sampleValue(after, 'hsmgw_tls_certificate_expiry_timestamp_seconds') > Date.now() / 1000);
      for (const s of after.samples) assert.match(s.name, /^hsmgw_/);
    } finally {
      await gw.stop();
    }
  });

  it('/healthz, /readyz and gRPC health report SERVING, and flip to NOT_SERVING on shutdown', async () => {
    const gw = await startTestGateway();
    const base = gw.metricsUrl.replace('/metrics', '');
    assert.equal((await fetch(`${base}/healthz`)).status, 200);
    const ready = await fetch(`${base}/readyz`);
    assert.equal(ready.status, 200);
    assert.equal(await ready.text(), 'ready\n');
    assert.equal((await fetch(`${base}/nope`)).status, 404);

    const health = healthClient(gw);
    const check = (service: string): Promise<string> => new Promise((resolve, reject) => {
      health.check({ service }, new grpc.Metadata(), { deadline: Date.now() + 5000 }, (err, res) => (err ? reject(err) : resolve(res.status)));
    });
    assert.equal(await check(''), 'SERVING');
    assert.equal(await check('hsmgateway.v1.Signer'), 'SERVING');

    const watch = health.watch({ service: 'hsmgateway.v1.Signer' });
    const statuses: string[] = [];
    const sawNotServing = new Promise<void>((resolve) => {
      watch.on('data', (r: HealthResponse) => {
        statuses.push(r.status);
        if (r.status === 'NOT_SERVING') resolve();
      });
      watch.on('error', () => undefined);
    });
    await new Promise((r) => setTimeout(r, 100));
    const stopping = gw.stop();
    await sawNotServing;
    watch.cancel();
    health.close();
    await stopping;
    assert.deepEqual(statuses, ['SERVING', 'NOT_SERVING']);
    await assert.rejects(fetch(`${base}/healthz`), 'the ops port is closed after shutdown');
  });

  it('server reflection lists the Signer service', async () => {
    const gw = await startTestGateway();
    try {
      const { cert, key } = gw.env.pki.clients.dev;
      const reflectionProto = path.join(path.dirname(require.resolve('@grpc/reflection/package.json')), 'build', 'proto', 'grpc', 'reflection', 'v1', 'reflection.proto');
      const def = protoLoader.loadSync(reflectionProto);
      const pkg = grpc.loadPackageDefinition(def) as unknown as { grpc: { reflection: { v1: { ServerReflection: new (a: string, c: grpc.ChannelCredentials) => grpc.Client & { serverReflectionInfo(): grpc.ClientDuplexStream<{ listServices: string }, { listServicesResponse?: { service: Array<{ name: string }> } }> } } } } };
      const client = new pkg.grpc.reflection.v1.ServerReflection(gw.endpoint, grpc.credentials.createSsl(fs.readFileSync(gw.env.pki.ca), fs.readFileSync(key), fs.readFileSync(cert)));
      const call = client.serverReflectionInfo();
      const names = await new Promise<string[]>((resolve, reject) => {
        call.on('data', (r) => resolve((r.listServicesResponse?.service ?? []).map((s: { name: string }) => s.name)));
        call.on('error', reject);
        call.write({ listServices: '' });
      });
      call.cancel();
      client.close();
      assert.ok(names.includes('hsmgateway.v1.Signer'), names.join(','));
    } finally {
      await gw.stop();
    }
  });
});
