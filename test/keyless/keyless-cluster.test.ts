// runKeylessCluster in the default keyless mode: two worker processes, each with its own
// GatewayClient, serve one port through the real gateway; both run non-blocking, and
// openssl s_client verifies the handshakes each of them makes.
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tls from 'node:tls';
import { after, before, test } from 'node:test';

import { freePort } from '../support/free-port';
import { startGatewayProcess, type GatewayProcess } from '../support/gateway-process';
import { run } from './support/keyless-kit';

const CHILD = path.join(__dirname, 'support', 'cluster-child.js');

let gateway: GatewayProcess;
let child: ChildProcess | undefined;

before(async () => {
  gateway = await startGatewayProcess();
});

after(async () => {
  child?.kill('SIGTERM');
  await gateway?.stop();
});

test('runKeylessCluster: both workers serve in the default (non-blocking) mode; s_client verifies their handshakes', { timeout: 60_000 }, async () => {
  const port = await freePort();
  const env = gateway.env;
  const spec = { endpoint: gateway.endpoint, caFile: env.pki.ca, certFile: env.pki.clients.dev.cert, keyFile: env.pki.clients.dev.key, keyName: 'dev-ec', port };
  const started = spawn(process.execPath, [CHILD], { env: { ...process.env, CLUSTER_CHILD_SPEC: JSON.stringify(spec) }, stdio: ['ignore', 'pipe', 'inherit'] });
  child = started;
  const workers = await new Promise<Array<{ pid: number; mode: string }>>((resolve, reject) => {
    const seen: Array<{ pid: number; mode: string }> = [];
    let buffered = '';
    started.stdout?.on('data', (chunk: Buffer) => {
      buffered += chunk.toString();
      for (let nl = buffered.indexOf('\n'); nl >= 0; nl = buffered.indexOf('\n')) {
        seen.push(JSON.parse(buffered.slice(0, nl)) as { pid: number; mode: string });
        buffered = buffered.slice(nl + 1);
        if (seen.length === 2) resolve(seen);
      }
    });
    started.once('exit', (code) => reject(new Error(`cluster exited (${code}) before its workers were ready`)));
  });
  assert.deepEqual(workers.map((w) => w.mode), ['non-blocking', 'non-blocking']);
  // dev-ec's certificate on the token is self-signed: it is its own trust anchor.
  const chain = (await gateway.client().getKey('dev-ec')).certificateChain;
  const caFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'keyless-cluster-')), 'dev-ec.pem');
  fs.writeFileSync(caFile, chain.map((der) => new X509Certificate(der).toString()).join(''));
  const servedBy = new Set<string>();
  for (let i = 0; i < 12; i++) {
    const result = await run('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-servername', 'localhost', '-verify_return_error', '-CAfile', caFile, '-brief']);
    assert.ok(result.ok, result.output);
    assert.match(result.output, /Verification: OK/);
    servedBy.add(await new Promise<string>((resolve, reject) => {
      const socket = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ca: fs.readFileSync(caFile) });
      let text = '';
      socket.on('data', (chunk: Buffer) => {
        text += chunk.toString();
        if (text.includes('\n')) socket.end();
      });
      socket.once('close', () => resolve(/served by (\d+)/.exec(text)?.[1] ?? text));
      socket.once('error', reject);
    }));
  }
  assert.ok(servedBy.size >= 1, 'the workers answered');
  assert.ok([...servedBy].every((pid) => workers.some((w) => String(w.pid) === pid)), `served by ${[...servedBy].join(', ')}`);
});
