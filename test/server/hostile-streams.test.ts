/**
 * A SignStream client that never reads its answers (docs/SECURITY.md "Hostile clients"): a
 * certificate without any grant sends half a million tiny SignRequests, refused before
 * authorization, and pauses its response stream; then the same spread over many streams of one
 * connection. The gateway runs in its own process so its RSS is its own; the attacker is a raw
 * HTTP/2 client.
 */
import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import type * as http2 from 'node:http2';
import { randomBytes } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { SignatureAlgorithm, SignRequest } from '../../proto/generated/hsmgateway/v1/signer';
import { startGatewayProcess, type GatewayProcess } from '../support/gateway-process';
import { connectRaw, grpcFrame, grpcRequest, SIGN_STREAM_PATH } from '../support/raw-grpc';
import { parsePrometheusText, sampleValue } from '../support/prometheus-text';
import { verifySignature } from '../support/signatures';

const REQUESTS = 500_000;
const STREAMS_IN_SECOND_ATTACK = 50;
const WATCH_MS = 12_000;
const RSS_GROWTH_LIMIT = 100 * 1024 * 1024;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  assert.ok(m, 'VmRSS');
  return Number(m[1]) * 1024;
}

/** A 9-byte SignRequest with an empty key name: refused (INVALID_ARGUMENT) before any authorization. */
function tinyRequestFrames(count: number): Buffer {
  const message = SignRequest.encode({ key: '', algorithm: SignatureAlgorithm.ECDSA_SHA256, input: { $case: 'digest', value: Buffer.alloc(5) }, requestId: 0n }).finish();
  assert.equal(message.length, 9);
  return Buffer.concat(Array.from({ length: count }, () => grpcFrame(message)));
}

interface Watch {
  rssGrowthBytes: number;
  metricsScrapes: number;
  slowestScrapeMs: number;
  signatures: number;
}

/**
 * While the attack runs: RSS sampled every 200 ms, /metrics scraped every 500 ms (each must
 * answer within 2 s), and a legitimate client signing in a loop (each signature verified).
 */
async function watchGateway(gw: GatewayProcess, baseline: number, ms: number): Promise<Watch> {
  const pid = gw.pid() as number;
  const end = Date.now() + ms;
  const watch: Watch = { rssGrowthBytes: 0, metricsScrapes: 0, slowestScrapeMs: 0, signatures: 0 };
  const client = gw.client('dev', { deadlineMs: 3000 });
  const spki = (await client.getKey('dev-ec')).publicKey;
  await Promise.all([
    (async () => {
      while (Date.now() < end) {
        watch.rssGrowthBytes = Math.max(watch.rssGrowthBytes, rssBytes(pid) - baseline);
        await sleep(200);
      }
    })(),
    (async () => {
      while (Date.now() < end) {
        const t = Date.now();
        const res = await fetch(gw.metricsUrl, { signal: AbortSignal.timeout(2000) });
        parsePrometheusText(await res.text());
        assert.equal(res.status, 200);
        watch.slowestScrapeMs = Math.max(watch.slowestScrapeMs, Date.now() - t);
        watch.metricsScrapes++;
        await sleep(500);
      }
    })(),
    (async () => {
      while (Date.now() < end) {
        const message = randomBytes(32);
        const signature = await client.signMessage('dev-ec', 'ECDSA_SHA256', message);
        assert.ok(verifySignature(spki, SignatureAlgorithm.ECDSA_SHA256, message, signature), 'the legitimate signature verifies');
        watch.signatures++;
        await sleep(100);
      }
    })(),
  ]);
  return watch;
}

async function refusedSoFar(gw: GatewayProcess): Promise<number> {
  const m = parsePrometheusText(await (await fetch(gw.metricsUrl)).text());
  return sampleValue(m, 'hsmgw_sign_requests_total', { code: 'INVALID_ARGUMENT' });
}

describe('a SignStream client that never reads its answers', () => {
  let gw: GatewayProcess;
  let attacker: http2.ClientHttp2Session | undefined;

  before(async () => {
    gw = await startGatewayProcess({ logging: { audit: true } });
  });
  after(async () => {
    attacker?.destroy();
    await gw.stop();
  });

  async function attack(streams: number): Promise<{ watch: Watch; read: number; stillQueuedBytes: number; refusedStreams: number }> {
    const client = gw.client('dev');
    await client.sign('dev-ec', 'ECDSA_SHA256', randomBytes(32)); // warm: connections, code paths
    await fetch(gw.metricsUrl);
    const baseline = rssBytes(gw.pid() as number);
    const readBefore = await refusedSoFar(gw);
    attacker = await connectRaw({ port: gw.grpcPort, ca: gw.env.pki.ca, identity: gw.env.pki.clients.nobody });
    const perStream = REQUESTS / streams;
    const chunk = tinyRequestFrames(1000);
    let refusedStreams = 0;
    const calls = Array.from({ length: streams }, () => {
      const call = grpcRequest(attacker as http2.ClientHttp2Session, SIGN_STREAM_PATH);
      call.pause(); // the answers are never read
      call.on('error', () => undefined);
      call.on('response', (headers) => { if (headers['grpc-status'] === String(grpc.status.RESOURCE_EXHAUSTED)) refusedStreams++; });
      for (let sent = 0; sent < perStream; sent += 1000) call.write(chunk);
      return call;
    });
    const watch = await watchGateway(gw, baseline, WATCH_MS);
    const read = (await refusedSoFar(gw)) - readBefore;
    const stillQueuedBytes = calls.reduce((n, c) => n + c.writableLength, 0);
    attacker.destroy();
    attacker = undefined;
    return { watch, read, stillQueuedBytes, refusedStreams };
  }

  it(`${REQUESTS} requests on one stream, answers never read: RSS grows < 100 MB, /metrics answers, another client keeps signing`, async () => {
    const { watch, read, stillQueuedBytes } = await attack(1);
    console.log(`# one stream: RSS +${(watch.rssGrowthBytes / 1048576).toFixed(1)} MB; gateway read ${read} of ${REQUESTS} requests, ${stillQueuedBytes} bytes held back in the attacker; ${watch.metricsScrapes} scrapes (slowest ${watch.slowestScrapeMs} ms); ${watch.signatures} legitimate signatures`);
    assert.ok(watch.rssGrowthBytes < RSS_GROWTH_LIMIT, `RSS grew by ${watch.rssGrowthBytes} bytes`);
    assert.ok(watch.metricsScrapes >= WATCH_MS / 1000, `${watch.metricsScrapes} scrapes answered`);
    assert.ok(watch.signatures >= 20, `${watch.signatures} legitimate signatures`);
    assert.ok(read < REQUESTS / 10, `the gateway stopped reading (read ${read})`);
    assert.ok(stillQueuedBytes > 0, 'HTTP/2 flow control pushed back on the attacker');
  });

  it(`the same spread over ${STREAMS_IN_SECOND_ATTACK} streams of one connection: streams beyond limits.maxSignStreamsPerConnection (16) get RESOURCE_EXHAUSTED, RSS grows < 100 MB, the others keep working`, async () => {
    const { watch, read, stillQueuedBytes, refusedStreams } = await attack(STREAMS_IN_SECOND_ATTACK);
    console.log(`# ${STREAMS_IN_SECOND_ATTACK} streams (${refusedStreams} refused): RSS +${(watch.rssGrowthBytes / 1048576).toFixed(1)} MB; gateway read ${read} of ${REQUESTS} requests, ${stillQueuedBytes} bytes held back in the attacker; ${watch.metricsScrapes} scrapes (slowest ${watch.slowestScrapeMs} ms); ${watch.signatures} legitimate signatures`);
    assert.ok(watch.rssGrowthBytes < RSS_GROWTH_LIMIT, `RSS grew by ${watch.rssGrowthBytes} bytes`);
    assert.ok(watch.metricsScrapes >= WATCH_MS / 1000, `${watch.metricsScrapes} scrapes answered`);
    assert.ok(watch.signatures >= 20, `${watch.signatures} legitimate signatures`);
    assert.equal(refusedStreams, STREAMS_IN_SECOND_ATTACK - 16, 'streams beyond the per-connection cap are refused');
    assert.ok(read < 16 * 4096, `the gateway stopped reading (read ${read})`);
    assert.ok(stillQueuedBytes > 0, 'HTTP/2 flow control pushed back on the attacker');
  });
});
