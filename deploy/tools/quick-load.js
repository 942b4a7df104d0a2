// Indicative loopback load for docs/SCALING.md: one gateway process on the test SoftHSM fixture
// (prepared by `npm test` in .hsm-gateway-test/, or HSMGW_TEST_STATE_DIR), one client process.
// Bounded: loopback only, runs for SECONDS, then stops the gateway. bench/ is the real tool.
// usage: node deploy/tools/quick-load.js KEY ALG INFLIGHT SECONDS SESSIONS_MAX SIGN_THREADS
const { spawn } = require('node:child_process');
const fs = require('node:fs'); const path = require('node:path'); const crypto = require('node:crypto');
const root = path.resolve(__dirname, '..', '..');
const { GatewayClient } = require(`${root}/dist/client/gateway-client.js`);
const { testConfigDocument } = require(`${root}/dist/test/support/test-gateway.js`);
const { testEnvironment } = require(`${root}/dist/test/support/test-environment.js`);
const YAML = require('yaml');
const [key, alg, inflight, secs, smax, threads] = process.argv.slice(2);
(async () => {
  const env = await testEnvironment();
  const doc = testConfigDocument(env, { pkcs11: { sessions: { min: Number(smax), max: Number(smax) }, signThreads: Number(threads) }, logging: { audit: false, level: 'warn' } });
  const net = require('node:net');
  const free = () => new Promise((res) => { const s = net.createServer().listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => res(p)); }); });
  const grpcPort = await free(), httpPort = await free();
  doc.listen = { grpc: `127.0.0.1:${grpcPort}`, http: `127.0.0.1:${httpPort}` };
  const cfg = path.join(require('node:os').tmpdir(), `hsmgw-quick-load-${process.pid}.yaml`); fs.writeFileSync(cfg, YAML.stringify(doc));
  const gw = spawn(process.execPath, [`${root}/bin/hsm-gateway.js`, 'serve', '--config', cfg], { stdio: ['ignore', 'ignore', 'inherit'] });
  const metrics = async () => (await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text());
  for (let i = 0; i < 100; i++) { try { if ((await fetch(`http://127.0.0.1:${httpPort}/readyz`)).ok) break; } catch {} await new Promise(r => setTimeout(r, 100)); }
  const client = new GatewayClient({ endpoints: [`localhost:${grpcPort}`], ca: fs.readFileSync(env.pki.ca), cert: fs.readFileSync(env.pki.clients.dev.cert), key: fs.readFileSync(env.pki.clients.dev.key), maxRetries: 0, deadlineMs: 10000 });
  const digest = crypto.createHash(alg.endsWith('384') ? 'sha384' : 'sha256').update('x').digest();
  // warm-up
  for (let i = 0; i < 200; i++) await client.sign(key, alg, digest);
  const cpu = (t) => Number(/^hsmgw_process_cpu_seconds_total (\S+)/m.exec(t)[1]);
  const cpu0 = cpu(await metrics());
  const lat = []; let n = 0, errs = 0; const end = Date.now() + Number(secs) * 1000; const t0 = process.hrtime.bigint(); const c0 = process.cpuUsage();
  await Promise.all(Array.from({ length: Number(inflight) }, async () => {
    while (Date.now() < end) { const s = process.hrtime.bigint(); try { await client.sign(key, alg, digest); n++; } catch { errs++; } lat.push(Number(process.hrtime.bigint() - s) / 1e6); }
  }));
  const el = Number(process.hrtime.bigint() - t0) / 1e9; const cc = process.cpuUsage(c0);
  const m = await metrics(); const cpu1 = cpu(m);
  lat.sort((a, b) => a - b); const q = (p) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))].toFixed(2);
  const hsmSum = Number(/^hsmgw_hsm_operation_seconds_sum (\S+)/m.exec(m)[1]), hsmCount = Number(/^hsmgw_hsm_operation_seconds_count (\S+)/m.exec(m)[1]);
  const waitSum = Number(/^hsmgw_session_wait_seconds_sum (\S+)/m.exec(m)[1]), waitCount = Number(/^hsmgw_session_wait_seconds_count (\S+)/m.exec(m)[1]);
  console.log(JSON.stringify({ key, alg, inflight: Number(inflight), sessions: Number(smax), signThreads: Number(threads), rps: Math.round(n / el), errors: errs, p50_ms: q(0.5), p99_ms: q(0.99), server_cpu_us_per_req: Math.round((cpu1 - cpu0) * 1e6 / n), client_cpu_us_per_req: Math.round((cc.user + cc.system) / n), hsm_mean_ms: (hsmSum / hsmCount * 1000).toFixed(3), wait_mean_ms: (waitSum / waitCount * 1000).toFixed(3) }));
  client.close(); gw.kill('SIGTERM'); await new Promise(r => gw.once('exit', r)); fs.rmSync(cfg, { force: true });
})().catch((e) => { console.error(e); process.exit(1); });
