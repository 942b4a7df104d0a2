// The two npm packages as the people who install them get them: `npm pack` of the gateway (the
// repository root) and of @hsm-gateway/client (the client/ workspace), checked against an
// allow-list and the size budget the README states; the client tarball installed with
// --omit=dev in a scratch "proxy" project (no server dependencies, a keyless HTTPS server that
// curl verifies, a clear error when no prebuilt addon matches); the gateway tarball installed in
// another scratch directory and `npx hsm-gateway serve` run on the embedded default.
import { strict as assert } from 'node:assert';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { freePort } from '../support/free-port';
import { startGatewayProcess, type GatewayProcess } from '../support/gateway-process';
import { REPO_ROOT, testEnvironment } from '../support/test-environment';

/** The size budget (README "Packages"): packed (the .tgz) and unpacked bytes, and file count. */
export const BUDGET = {
  'hsm-gateway': { packed: 600_000, unpacked: 2_000_000, files: 180 },
  '@hsm-gateway/client': { packed: 450_000, unpacked: 1_500_000, files: 130 },
} as const;

/** Every file of each tarball must match one of these. */
const ALLOWED: Record<keyof typeof BUDGET, RegExp[]> = {
  'hsm-gateway': [
    /^package\.json$/, /^README\.md$/, /^CHANGELOG\.md$/, /^LICENSE$/,
    /^bin\/hsm-gateway\.js$/,
    /^lib\/client\.(js|d\.ts)$/,
    /^dist\/(cli|server|client|common|proto\/generated)\/.+\.js$/,
    /^proto\/hsmgateway\/v1\/[a-z_]+\.proto$/,
    /^client\/keyless\/native\/build\/hsmgw-provider\.so$/,
    /^deploy\/(docker|grafana|kubernetes|prometheus|systemd|tools)\/.+\.(ya?ml|json|sh|js|service|timer|conf|md)$/,
    /^deploy\/docker\/Dockerfile$/,
  ],
  '@hsm-gateway/client': [
    /^package\.json$/, /^README\.md$/, /^LICENSE$/,
    /^dist\/(client|common|proto\/generated)\/.+\.(js|d\.ts)$/,
    /^prebuilds\/linux-x64\/keyless\.abi(115|127|137)\.glibc\.node$/,
    /^keyless\/native\/binding\.gyp$/,
    /^keyless\/native\/src\/(core|node)\/[a-z_]+\.(cc|h)$/,
    /^keyless\/native\/build\/generated\/signature_algorithm\.h$/,
    /^scripts\/build-addon\.js$/,
  ],
};

/** Files each tarball cannot do without. */
const REQUIRED: Record<keyof typeof BUDGET, string[]> = {
  'hsm-gateway': ['bin/hsm-gateway.js', 'dist/cli/main.js', 'dist/server/gateway.js', 'lib/client.js', 'lib/client.d.ts', 'proto/hsmgateway/v1/signer.proto', 'CHANGELOG.md', 'LICENSE', 'deploy/docker/Dockerfile'],
  '@hsm-gateway/client': [
    'LICENSE', 'dist/client/index.js', 'dist/client/index.d.ts', 'dist/client/keyless/keyless-worker.js', 'dist/client/gateway-remote-signer.js',
    'prebuilds/linux-x64/keyless.abi115.glibc.node', 'prebuilds/linux-x64/keyless.abi127.glibc.node', 'prebuilds/linux-x64/keyless.abi137.glibc.node',
  ],
};

interface PackResult {
  name: keyof typeof BUDGET;
  filename: string;
  size: number;
  unpackedSize: number;
  entryCount: number;
  files: Array<{ path: string }>;
}

function run(cmd: string, args: string[], options: { cwd: string; env?: NodeJS.ProcessEnv; timeoutMs?: number }): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { cwd: options.cwd, env: options.env ?? process.env, timeout: options.timeoutMs ?? 300_000, maxBuffer: 64 << 20 }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === 'number' ? error.code : null;
      resolve({ code, stdout, stderr });
    });
  });
}

async function must(cmd: string, args: string[], options: { cwd: string; env?: NodeJS.ProcessEnv; timeoutMs?: number }): Promise<string> {
  const result = await run(cmd, args, options);
  assert.equal(result.code, 0, `${cmd} ${args.join(' ')} (in ${options.cwd}) failed:\n${result.stdout}\n${result.stderr}`);
  return result.stdout;
}

/** `npm pack [--workspace client] --json`: scripts off (the tree is already built by `npm ci`). */
async function pack(workspace: string | undefined, extra: string[]): Promise<PackResult> {
  const args = ['pack', '--json', '--ignore-scripts', ...(workspace ? ['--workspace', workspace] : []), ...extra];
  const out = await must('npm', args, { cwd: REPO_ROOT });
  const results = JSON.parse(out) as PackResult[];
  assert.equal(results.length, 1, out);
  return results[0] as PackResult;
}

const npmEnv = (dir: string): NodeJS.ProcessEnv => ({ ...process.env, npm_config_cache: process.env['npm_config_cache'] ?? path.join(os.homedir(), '.npm'), npm_config_update_notifier: 'false', HOME: process.env['HOME'] ?? dir });

const scratchDirs: string[] = [];

function scratchProject(prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  scratchDirs.push(dir);
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: path.basename(dir).toLowerCase(), version: '1.0.0', private: true }));
  return dir;
}

async function install(dir: string, tarballs: string[]): Promise<void> {
  await must('npm', ['install', '--omit=dev', '--prefer-offline', '--no-audit', '--no-fund', ...tarballs], { cwd: dir, env: npmEnv(dir), timeoutMs: 600_000 });
}

/** Runs a script of the scratch project until it prints a line matching `ready` (or exits). */
function startScript(dir: string, file: string, env: NodeJS.ProcessEnv, ready: RegExp): Promise<{ child: ChildProcess; output: () => string; match: RegExpMatchArray }> {
  const child = spawn(process.execPath, [file], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${file} not ready in 60 s:\n${out}`)), 60_000);
    const check = (): void => {
      const match = ready.exec(out);
      if (match) { clearTimeout(timer); resolve({ child, output: () => out, match }); }
    };
    child.stdout.on('data', (b: Buffer) => { out += b.toString(); check(); });
    child.stderr.on('data', (b: Buffer) => { out += b.toString(); });
    child.once('exit', (code) => { clearTimeout(timer); setTimeout(() => reject(new Error(`${file} exited (${code}):\n${out}`)), 50); });
  });
}

function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => { child.once('exit', () => resolve()); child.kill('SIGTERM'); });
}

// The proxy team's code, as plain JavaScript in the scratch project: it imports only the package.
const PROXY_SCRIPT = `'use strict';
const crypto = require('node:crypto');
const fs = require('node:fs');
const https = require('node:https');
const { GatewayClient } = require('@hsm-gateway/client');

const keylessMapped = () => fs.readFileSync('/proc/self/maps', 'utf8').split('\\n').filter((l) => /keyless[^/]*\\.node/.test(l)).length > 0;

(async () => {
  const client = new GatewayClient({
    endpoints: [process.env.GATEWAY], ca: fs.readFileSync(process.env.CA), cert: fs.readFileSync(process.env.CERT), key: fs.readFileSync(process.env.KEY), maxRetries: 0,
  });
  // Plain signing first: it must not load the addon.
  const key = await client.getKey('dev-ec');
  const digest = crypto.createHash('sha256').update('packaging').digest();
  const signature = await client.sign('dev-ec', 'ECDSA_SHA256', digest);
  const publicKey = crypto.createPublicKey({ key: key.publicKey, format: 'der', type: 'spki' });
  const verified = crypto.verify('sha256', Buffer.from('packaging'), publicKey, signature);
  const before = keylessMapped();
  let keylessError = null;
  let server = null;
  try {
    const credentials = await client.tlsCredentials('dev-ec');
    fs.writeFileSync(process.env.CHAIN, credentials.cert);
    server = https.createServer(credentials, (_req, res) => res.end('keyless from the package\\n'));
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  } catch (error) {
    keylessError = error.message;
  }
  // prom-client is an optional peer, not installed here: the registry says what to install.
  let metricsError = null;
  if (server) await client.keylessMetricsRegistry().then(() => { metricsError = 'none'; }, (error) => { metricsError = error.message; });
  const loaded = Object.keys(require.cache).filter((f) => /node_modules\\/(prom-client|@peculiar|reflect-metadata|pkcs11js|generic-pool|yaml)\\//.test(f));
  console.log('RESULT ' + JSON.stringify({ verified, addonBeforeKeyless: before, addonAfterKeyless: keylessMapped(), keylessError, metricsError, loaded, port: server ? server.address().port : 0 }));
  process.once('SIGTERM', () => { if (server) server.close(); client.close().finally(() => process.exit(0)); });
  if (!server) await client.close();
})().catch((error) => { console.error(error); process.exit(1); });
`;

interface ProxyResult { verified: boolean; addonBeforeKeyless: boolean; addonAfterKeyless: boolean; keylessError: string | null; metricsError: string | null; loaded: string[]; port: number }

describe('packaging: npm pack of both packages, installed as users install them', { timeout: 900_000 }, () => {
  const packDir = fs.mkdtempSync(path.join(os.tmpdir(), 'hsmgw-pack-'));
  const tarballs: Partial<Record<keyof typeof BUDGET, string>> = {};
  let gateway: GatewayProcess | undefined;
  const children: ChildProcess[] = [];

  before(async () => {
    for (const workspace of [undefined, 'client']) {
      const result = await pack(workspace, ['--pack-destination', packDir]);
      tarballs[result.name] = path.join(packDir, result.filename);
    }
  });

  after(async () => {
    for (const child of children) await stop(child);
    await gateway?.stop();
    for (const dir of [packDir, ...scratchDirs]) fs.rmSync(dir, { recursive: true, force: true });
  });

  for (const [name, workspace] of [['hsm-gateway', undefined], ['@hsm-gateway/client', 'client']] as const) {
    test(`${name}: npm pack --dry-run holds only allowed files, within the size budget`, async () => {
      const result = await pack(workspace, ['--dry-run']);
      assert.equal(result.name, name);
      const paths = result.files.map((f) => f.path);
      const stray = paths.filter((p) => !ALLOWED[name].some((pattern) => pattern.test(p)));
      assert.deepEqual(stray, [], `files outside the allow-list of ${name}`);
      for (const file of REQUIRED[name]) assert.ok(paths.includes(file), `${name} lacks ${file}`);
      const budget = BUDGET[name];
      assert.ok(result.size <= budget.packed, `${name}: ${result.size} bytes packed > budget ${budget.packed}`);
      assert.ok(result.unpackedSize <= budget.unpacked, `${name}: ${result.unpackedSize} bytes unpacked > budget ${budget.unpacked}`);
      assert.ok(result.entryCount <= budget.files, `${name}: ${result.entryCount} files > budget ${budget.files}`);
      const manifest = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, workspace ?? '', 'package.json'), 'utf8')) as Record<string, unknown>;
      assert.equal(manifest['private'], undefined, `${name} must be publishable`);
      for (const field of ['repository', 'license', 'engines', 'exports', 'types', 'version']) assert.ok(manifest[field] !== undefined, `${name}: no ${field}`);
    });
  }

  test('@hsm-gateway/client in a proxy project (--omit=dev): no server dependencies, keyless HTTPS verified by curl', async () => {
    gateway = await startGatewayProcess();
    const pki = (await testEnvironment()).pki;
    const dir = scratchProject('hsmgw-proxy-');
    await install(dir, [tarballs['@hsm-gateway/client'] as string]);
    const modules = path.join(dir, 'node_modules');
    for (const absent of ['pkcs11js', 'generic-pool', 'yaml', 'grpc-health-check', 'hsm-gateway', 'prom-client', '@peculiar/x509']) {
      assert.ok(!fs.existsSync(path.join(modules, absent)), `${absent} was installed with the client`);
    }
    assert.ok(fs.existsSync(path.join(modules, '@grpc', 'grpc-js')));
    fs.writeFileSync(path.join(dir, 'proxy.js'), PROXY_SCRIPT);
    const chain = path.join(dir, 'chain.pem');
    const scriptEnv = { ...process.env, GATEWAY: gateway.endpoint, CA: pki.ca, CERT: pki.clients.dev.cert, KEY: pki.clients.dev.key, CHAIN: chain, HSM_GATEWAY_KEYLESS_ADDON: '' };
    const proxy = await startScript(dir, 'proxy.js', scriptEnv, /^RESULT (.*)$/m);
    children.push(proxy.child);
    const result = JSON.parse(proxy.match[1] as string) as ProxyResult;
    assert.equal(result.keylessError, null, proxy.output());
    assert.ok(result.verified, 'the plain signature verifies');
    assert.equal(result.addonBeforeKeyless, false, 'sign/getKey loaded the keyless addon');
    assert.equal(result.addonAfterKeyless, true);
    assert.deepEqual(result.loaded, []);
    assert.match(result.metricsError ?? '', /keylessMetricsRegistry\(\) needs prom-client .*npm install prom-client/);
    const curl = await must('curl', ['-sS', '--cacert', chain, '--resolve', `localhost:${result.port}:127.0.0.1`, `https://localhost:${result.port}/`], { cwd: dir, timeoutMs: 30_000 });
    assert.equal(curl, 'keyless from the package\n');
    await stop(proxy.child);

    // No prebuild for this ABI (and none built from source): one clear error at the first
    // keyless use, naming platform and ABI and how to build; plain signing keeps working.
    fs.writeFileSync(path.join(dir, 'missing.js'), `Object.defineProperty(process.versions, 'modules', { value: '999' });\n${PROXY_SCRIPT}`);
    const missing = await startScript(dir, 'missing.js', scriptEnv, /^RESULT (.*)$/m);
    children.push(missing.child);
    const without = JSON.parse(missing.match[1] as string) as ProxyResult;
    assert.ok(without.verified, `plain signing without the addon: ${missing.output()}`);
    assert.equal(without.addonAfterKeyless, false);
    assert.equal(without.port, 0);
    const message = without.keylessError ?? '';
    assert.match(message, /no native addon for linux-x64 \(glibc\), Node [\d.]+ \(ABI 999\)/);
    assert.match(message, /npm rebuild @hsm-gateway\/client/);
    assert.match(message, /GatewayClient\.sign\(\) and getKey\(\) work without it/);
    await stop(missing.child);
  });

  test('hsm-gateway (with the client tarball): npx hsm-gateway serve on the embedded default answers /readyz', async () => {
    const dir = scratchProject('hsmgw-server-');
    await install(dir, [tarballs['@hsm-gateway/client'] as string, tarballs['hsm-gateway'] as string]);
    assert.ok(fs.existsSync(path.join(dir, 'node_modules', 'pkcs11js', 'build', 'Release', 'pkcs11.node')), 'pkcs11js was not built at install');
    // `hsm-gateway/client` still works, as a re-export of @hsm-gateway/client.
    const reexport = await must(process.execPath, ['-e', "const a = require('hsm-gateway/client'), b = require('@hsm-gateway/client'); console.log(a.GatewayClient === b.GatewayClient)"], { cwd: dir });
    assert.equal(reexport.trim(), 'true');
    // The gateway's own keyless commands (keyless-pem, agent) find the client package's prebuild.
    const loader = path.join(dir, 'node_modules', 'hsm-gateway', 'dist', 'client', 'keyless', 'keyless-addon.js');
    const addon = await must(process.execPath, ['-e', `console.log(require(${JSON.stringify(loader)}).keylessAddonPath())`], { cwd: dir });
    assert.equal(addon.trim(), path.join(fs.realpathSync(dir), 'node_modules', '@hsm-gateway', 'client', 'prebuilds', 'linux-x64', `keyless.abi${process.versions.modules}.glibc.node`));
    const [grpc, metrics] = [await freePort(), await freePort()];
    const stateDir = path.join(dir, 'state');
    const child = spawn('npx', ['--no-install', 'hsm-gateway', 'serve'], {
      cwd: dir,
      env: { ...npmEnv(dir), HSMGW_STATE_DIR: stateDir, HSMGW_CONFIG: '', HSMGW_LISTEN: `127.0.0.1:${grpc}`, HSMGW_METRICS_LISTEN: `127.0.0.1:${metrics}` },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    children.push(child);
    let out = '';
    child.stdout.on('data', (b: Buffer) => { out += b.toString(); });
    child.stderr.on('data', (b: Buffer) => { out += b.toString(); });
    let status = 0;
    for (let i = 0; i < 600 && child.exitCode === null; i++) {
      status = await fetch(`http://127.0.0.1:${metrics}/readyz`).then((r) => r.status, () => 0);
      if (status === 200) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(status, 200, `no /readyz from the installed gateway:\n${out}`);
    assert.ok(fs.existsSync(stateDir), 'the embedded default made its state directory');
    // npx runs the gateway as its child: stop the whole group.
    if (child.pid !== undefined) process.kill(-child.pid, 'SIGTERM');
    await new Promise((resolve) => { if (child.exitCode !== null) resolve(undefined); else child.once('exit', resolve); });
  });
});
