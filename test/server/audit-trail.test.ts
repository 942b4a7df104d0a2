/**
 * The audit trail survives floods (docs/SECURITY.md "What is logged"): refused requests are
 * counted per identity, reason and second while every signature keeps its own line, and a
 * stdout that cannot take the lines right now (a full non-blocking pipe) delays them without
 * losing any; lines that are lost (queue full, output gone) are counted in a metric.
 */
import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { SignatureAlgorithm, type SignRequest, type SignResponse } from '../../proto/generated/hsmgateway/v1/signer';
import { Logger } from '../../server/observability/logger';
import { startGatewayProcess } from '../support/gateway-process';
import { IDENTITIES } from '../support/test-environment';
import { startTestGateway, type TestGateway } from '../support/test-gateway';
import { parsePrometheusText, sampleValue } from '../support/prometheus-text';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

type LogLine = Record<string, unknown>;

const parseLines = (text: string): LogLine[] => text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as LogLine);

/** A named pipe: its read end as a socket the test can pause, its write end as a non-blocking fd. */
function namedPipe(dir: string, name: string): { reader: net.Socket; writeFd: number; received(): string } {
  const file = path.join(dir, `${name}.fifo`);
  execFileSync('mkfifo', [file]);
  const readFd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  const writeFd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
  const reader = new net.Socket({ fd: readFd, readable: true, writable: false });
  let text = '';
  reader.on('data', (d: Buffer) => { text += d.toString(); });
  return { reader, writeFd, received: () => text };
}

/** Resolves once `read()` has not grown for `quietMs`. */
async function untilQuiet(read: () => string, quietMs: number): Promise<void> {
  let last = -1;
  while (read().length !== last) {
    last = read().length;
    await sleep(quietMs);
  }
}

describe('a flood of refused requests', () => {
  let gw: TestGateway;
  let dir: string;
  let logFile: string;
  let fd: number;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'audit-flood-'));
    logFile = path.join(dir, 'log.jsonl');
    fd = fs.openSync(logFile, 'w');
    gw = await startTestGateway({ logging: { audit: true } }, new Logger('info', fd));
  });
  after(async () => {
    await gw.stop();
    fs.closeSync(fd);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('20,000 refused requests and 1,000 refused by another identity make a few counted lines; each of 50 signatures keeps its own line', async () => {
    const started = Date.now();
    const stream = gw.rawClient('dev').signStream();
    const answers: SignResponse[] = [];
    const done = new Promise<void>((resolve, reject) => {
      stream.on('data', (a: SignResponse) => answers.push(a));
      stream.on('error', reject);
      stream.on('end', resolve);
    });
    const garbage: SignRequest = { key: '', algorithm: SignatureAlgorithm.ECDSA_SHA256, input: { $case: 'digest', value: Buffer.alloc(5) }, requestId: 0n };
    for (let i = 0; i < 20_000; i++) stream.write(garbage);
    stream.end();
    const nobody = gw.client('nobody');
    const denied = Array.from({ length: 1000 }, () => nobody.sign('dev-ec', 'ECDSA_SHA256', randomBytes(32)).catch(() => undefined));
    const client = gw.client();
    for (let i = 0; i < 50; i++) await client.sign('dev-ec', 'ECDSA_SHA256', randomBytes(32));
    await Promise.all([done, ...denied]);
    assert.equal(answers.length, 20_000);
    await sleep(1200); // the last second's counts are written
    const seconds = Math.ceil((Date.now() - started) / 1000) + 1;
    const audits = parseLines(fs.readFileSync(logFile, 'utf8')).filter((l) => l.level === 'audit');
    const signed = audits.filter((l) => l.msg === 'sign');
    const refused = audits.filter((l) => l.msg === 'sign refused');
    const count = (identity: string, outcome: string): { lines: number; total: number } => {
      const lines = refused.filter((l) => l.identity === identity && l.outcome === outcome);
      return { lines: lines.length, total: lines.reduce((n, l) => n + Number(l.count), 0) };
    };
    const garbageCounts = count(IDENTITIES.dev, 'INVALID_ARGUMENT');
    const deniedCounts = count(IDENTITIES.nobody, 'PERMISSION_DENIED');
    console.log(`# ${audits.length} audit lines for 21,050 requests: ${signed.length} signatures, ${garbageCounts.lines} lines counting ${garbageCounts.total} garbage requests, ${deniedCounts.lines} counting ${deniedCounts.total} denials`);
    assert.equal(signed.length, 50, 'every signature made has its own line');
    assert.equal(new Set(signed.map((l) => l.digest_fp)).size, 50);
    assert.equal(garbageCounts.total, 20_000, 'every refusal is counted');
    assert.equal(deniedCounts.total, 1000);
    assert.ok(garbageCounts.lines <= seconds && deniedCounts.lines <= seconds, `one line per identity, reason and second (${seconds} s)`);
    assert.equal(refused.length, garbageCounts.lines + deniedCounts.lines);
  });
});

describe('a stdout that cannot take the lines now', () => {
  let dir: string;

  before(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'audit-pipe-')); });
  after(() => { fs.rmSync(dir, { recursive: true, force: true }); });

  it('a full non-blocking pipe (EAGAIN, short writes): the gateway keeps signing, and once the pipe is read every signature\'s line arrives; the delays are counted, no line is dropped', async () => {
    const pipe = namedPipe(dir, 'gateway-stdout');
    const gw = await startGatewayProcess({ logging: { audit: true }, stdoutFd: pipe.writeFd });
    fs.closeSync(pipe.writeFd);
    try {
      pipe.reader.pause(); // the log collector stalls
      const client = gw.client();
      const SIGNATURES = 2000;
      const t = Date.now();
      await Promise.all(Array.from({ length: 8 }, async () => {
        for (let i = 0; i < SIGNATURES / 8; i++) await client.sign('dev-ec', 'ECDSA_SHA256', randomBytes(32));
      }));
      const signingMs = Date.now() - t;
      const during = parsePrometheusText(await (await fetch(gw.metricsUrl)).text());
      pipe.reader.resume();
      await untilQuiet(pipe.received, 1000);
      const m = parsePrometheusText(await (await fetch(gw.metricsUrl)).text());
      const signed = parseLines(pipe.received()).filter((l) => l.level === 'audit' && l.msg === 'sign');
      const deferred = sampleValue(during, 'hsmgw_log_writes_deferred_total', {});
      console.log(`# ${SIGNATURES} signatures in ${signingMs} ms while stdout was full; ${deferred} deferred writes; ${signed.length} audit lines arrived`);
      assert.equal(sampleValue(m, 'hsmgw_sign_requests_total', { code: 'OK' }), SIGNATURES);
      assert.ok(deferred > 0, 'the pipe was full: writes were deferred');
      assert.equal(signed.length, SIGNATURES, 'every signature\'s audit line arrived');
      assert.equal(sampleValue(m, 'hsmgw_log_lines_dropped_total', { kind: 'audit' }), 0);
    } finally {
      pipe.reader.destroy();
      await gw.stop();
    }
  });

  it('lines that cannot be kept (queue full) or written (output gone) are counted by kind', async () => {
    const pipe = namedPipe(dir, 'logger');
    const dropped = { lines: 0, audit: 0, deferred: 0 };
    const logger = new Logger('info', pipe.writeFd, { maxQueuedBytes: 200_000 });
    logger.observe({ writesDeferred: (n) => { dropped.deferred += n; }, linesDropped: (n, audit) => { dropped.lines += n; dropped.audit += audit; } });
    pipe.reader.pause();
    const LINES = 5000;
    for (let i = 0; i < LINES; i++) logger.audit('sign', { request_id: String(i), pad: 'x'.repeat(100) });
    logger.info('not an audit line');
    await sleep(100);
    pipe.reader.resume();
    await untilQuiet(pipe.received, 300);
    const received = parseLines(pipe.received());
    console.log(`# ${received.length} lines written, ${dropped.lines} counted as dropped (${dropped.audit} audit), ${dropped.deferred} deferred writes`);
    assert.ok(dropped.audit > 0, 'the queue filled up');
    assert.equal(received.length + dropped.lines, LINES + 1, 'every line was written or counted');
    assert.equal(received.filter((l) => l.level === 'audit').length + dropped.audit, LINES);

    pipe.reader.destroy(); // the collector goes away: EPIPE
    const before = dropped.lines;
    logger.audit('sign', { request_id: 'after the reader left' });
    await sleep(100);
    assert.equal(dropped.lines - before, 1, 'a line the output can no longer take is counted');
    fs.closeSync(pipe.writeFd);
  });
});
