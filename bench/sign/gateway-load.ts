/**
 * A load process for the gateway (forked by bench/run.ts): keeps `concurrency` signatures in
 * flight, by unary Sign through GatewayClient or on one SignStream with request_id matching.
 */
import * as fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { GatewayClient, algorithmValue } from '../../client/gateway-client';
import { SignerClient, type SignResponse } from '../../proto/generated/hsmgateway/v1/signer';
import { serveLoad, type LoadCounters, type RunningLoad } from '../support/load-process';
import type { GatewayLoadSpec } from './sign-specs';

const DIGESTS = Array.from({ length: 64 }, () => randomBytes(32));

function fail(counters: LoadCounters, err: unknown): void {
  counters.errors++;
  counters.firstError ??= (err as Error).message;
}

async function unaryLoad(spec: GatewayLoadSpec, counters: LoadCounters): Promise<RunningLoad> {
  const client = new GatewayClient({
    endpoints: [spec.endpoint], ca: fs.readFileSync(spec.caFile), cert: fs.readFileSync(spec.certFile), key: fs.readFileSync(spec.keyFile),
    deadlineMs: 30_000, maxRetries: 0,
  });
  await client.getKey(spec.keyName); // connects before the clock starts
  let stopping = false;
  let n = 0;
  const worker = async (): Promise<void> => {
    while (!stopping) {
      const t0 = performance.now();
      try {
        await client.sign(spec.keyName, spec.algorithm, DIGESTS[n++ & 63]);
        counters.latency.add((performance.now() - t0) * 1000);
        counters.ops++;
      } catch (err) {
        fail(counters, err);
      }
    }
  };
  const workers = Array.from({ length: spec.concurrency }, worker);
  return {
    async stop() {
      stopping = true;
      await Promise.all(workers);
      await client.close();
    },
  };
}

async function streamLoad(spec: GatewayLoadSpec, counters: LoadCounters): Promise<RunningLoad> {
  const credentials = grpc.credentials.createSsl(fs.readFileSync(spec.caFile), fs.readFileSync(spec.keyFile), fs.readFileSync(spec.certFile));
  const client = new SignerClient(spec.endpoint, credentials);
  await new Promise<void>((resolve, reject) => client.waitForReady(Date.now() + 10_000, (err) => (err ? reject(err) : resolve())));
  const algorithm = algorithmValue(spec.algorithm);
  const call = client.signStream();
  const sentAt = new Map<bigint, number>();
  let nextId = 1n;
  let stopping = false;
  let finish: (() => void) | undefined;
  const ended = new Promise<void>((resolve) => { finish = resolve; });

  const send = (): void => {
    const id = nextId++;
    sentAt.set(id, performance.now());
    call.write({ key: spec.keyName, algorithm, input: { $case: 'digest', value: DIGESTS[Number(id & 63n)] }, requestId: id });
  };
  call.on('data', (res: SignResponse) => {
    const t0 = sentAt.get(res.requestId);
    if (t0 === undefined) {
      fail(counters, new Error(`answer for unknown request_id ${res.requestId}`));
      return;
    }
    sentAt.delete(res.requestId);
    if (res.errorCode !== 0) {
      fail(counters, new Error(`SignStream item: code ${res.errorCode}: ${res.errorMessage}`));
    } else {
      counters.latency.add((performance.now() - t0) * 1000);
      counters.ops++;
    }
    if (!stopping) send();
    else if (sentAt.size === 0) call.end();
  });
  call.on('error', (err) => {
    fail(counters, err);
    finish?.();
  });
  call.on('end', () => finish?.());
  for (let i = 0; i < spec.concurrency; i++) send();
  return {
    async stop() {
      stopping = true;
      if (sentAt.size === 0) call.end();
      await Promise.race([ended, new Promise((r) => setTimeout(r, 30_000))]);
      client.close();
    },
  };
}

serveLoad<GatewayLoadSpec>((spec, counters) => (spec.rpc === 'unary' ? unaryLoad(spec, counters) : streamLoad(spec, counters)));
