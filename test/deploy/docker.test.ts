/**
 * deploy/docker without a container engine: the Dockerfile's stages and metadata, the file
 * layout its runtime stage copies (rebuilt in a temp dir from this build and actually run through
 * the entrypoint), the entrypoint's checks and subcommands run with bash, and compose.yaml's
 * references.
 */
import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parse as parseYaml, stringify as toYaml } from 'yaml';
import { GatewayClient } from '../../client/gateway-client';
import { testConfigDocument } from '../support/test-gateway';
import { testEnvironment, type TestEnvironment } from '../support/test-environment';
import { deployPath, describeRun, freePort, REPO_ROOT, run, start, tempDir, waitFor, which } from './support/deploy-files';

const ENTRYPOINT = deployPath('docker', 'entrypoint.sh');
const bash = which('bash') ?? '/bin/bash';

interface Instruction { op: string; args: string }
interface Stage { name: string; from: string; instructions: Instruction[] }

/** The Dockerfile as stages of instructions (continuation lines joined, comments dropped). */
function parseDockerfile(text: string): Stage[] {
  const lines = text.replace(/\\\n/g, ' ').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
  const stages: Stage[] = [];
  for (const line of lines) {
    const m = /^(\w+)\s+(.*)$/.exec(line);
    if (!m) continue;
    const op = m[1].toUpperCase();
    if (op === 'FROM') {
      const f = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(m[2].trim());
      assert.ok(f, `FROM ${m[2]}`);
      stages.push({ name: f[2] ?? String(stages.length), from: f[1], instructions: [] });
    } else if (stages.length) {
      stages[stages.length - 1].instructions.push({ op, args: m[2].trim() });
    }
  }
  return stages;
}

const dockerfile = (): Stage[] => parseDockerfile(fs.readFileSync(deployPath('docker', 'Dockerfile'), 'utf8'));
const stage = (name: string): Stage => {
  const s = dockerfile().find((x) => x.name === name);
  assert.ok(s, `no stage ${name}`);
  return s;
};
/** ENV of a stage including the stages it is built FROM. */
function stageEnv(name: string): Record<string, string> {
  const s = stage(name);
  const parent = dockerfile().find((x) => x.name === s.from);
  const env = parent ? stageEnv(parent.name) : {};
  for (const i of s.instructions.filter((x) => x.op === 'ENV')) {
    for (const m of i.args.matchAll(/(\w+)=(\S*)/g)) env[m[1]] = m[2];
  }
  return env;
}
/** COPY instructions: [from stage or undefined, sources, destination]. */
function copies(s: Stage): Array<{ from?: string; sources: string[]; dest: string }> {
  return s.instructions.filter((i) => i.op === 'COPY').map((i) => {
    const words = i.args.split(/\s+/);
    const from = words.find((w) => w.startsWith('--from='))?.slice(7);
    const plain = words.filter((w) => !w.startsWith('--'));
    return { from, sources: plain.slice(0, -1), dest: plain[plain.length - 1] };
  });
}
const execForm = (args: string): string[] => JSON.parse(args.replace(/^CMD\s+/, '')) as string[];

/**
 * The user's install the build stage makes in /app: both packages packed from this build and
 * installed from their tarballs with --omit=dev (the build stage's RUN lines, checked below).
 */
function installLikeTheImage(app: string): void {
  const pkg = tempDir('pkg');
  for (const workspace of [[], ['--workspace', 'client']]) {
    const r = run('npm', ['pack', '--ignore-scripts', '--pack-destination', pkg, ...workspace], { cwd: REPO_ROOT, timeoutMs: 120_000 });
    assert.equal(r.status, 0, describeRun(r));
  }
  const tarballs = fs.readdirSync(pkg).sort().reverse().map((f) => path.join(pkg, f)); // the client first
  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'hsm-gateway-image', private: true }));
  const r = run('npm', ['install', '--omit=dev', '--prefer-offline', '--no-audit', '--no-fund', ...tarballs], { cwd: app, timeoutMs: 600_000 });
  assert.equal(r.status, 0, describeRun(r));
  fs.rmSync(pkg, { recursive: true, force: true });
}

/**
 * The runtime stage's /app, rebuilt: `COPY --from=build /app ./` is the user's install
 * (installLikeTheImage); any other `COPY --from=build /src/X ./Y` copies X to <root>/app/Y.
 * appDir is HSMGW_APP_DIR inside that layout.
 */
function imageLayout(): { root: string; app: string; appDir: string; entrypoint: string } {
  const root = tempDir('image');
  const app = path.join(root, 'app');
  fs.mkdirSync(app);
  for (const c of copies(stage('runtime'))) {
    if (c.from === 'build') {
      for (const src of c.sources) {
        if (src === '/app') {
          installLikeTheImage(app);
          continue;
        }
        const rel = src.replace(/^\/src\//, '');
        fs.cpSync(path.join(REPO_ROOT, rel), path.join(app, c.dest), { recursive: true });
      }
    }
  }
  const entrypoint = path.join(root, 'hsm-gateway-entrypoint');
  fs.copyFileSync(ENTRYPOINT, entrypoint);
  return { root, app, appDir: path.join(root, stageEnv('runtime').HSMGW_APP_DIR), entrypoint };
}

function entryEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: process.env.HOME, HSMGW_NODE: process.execPath, ...extra };
  return env;
}

describe('Dockerfile', () => {
  it('has build, runtime, dev and production stages; production (the default) is last', () => {
    const names = dockerfile().map((s) => s.name);
    assert.deepEqual(names, ['build', 'runtime', 'dev', 'production']);
    assert.equal(stage('dev').from, 'runtime');
    assert.equal(stage('production').from, 'runtime');
  });

  it('runs as a non-root numeric user, with the entrypoint it copies and a HEALTHCHECK through it', () => {
    for (const name of ['runtime', 'dev']) {
      const users = stage(name).instructions.filter((i) => i.op === 'USER').map((i) => i.args);
      const last = users[users.length - 1];
      assert.match(last ?? '', /^[1-9]\d*:[1-9]\d*$/, `stage ${name} ends as USER ${last}`);
    }
    const rt = stage('runtime');
    const entry = execForm(rt.instructions.find((i) => i.op === 'ENTRYPOINT')?.args ?? '[]');
    const copied = copies(rt).find((c) => c.sources.includes('deploy/docker/entrypoint.sh'));
    assert.ok(copied, 'the entrypoint script is not copied');
    assert.deepEqual(entry, [copied.dest]);
    assert.match(rt.instructions.find((i) => i.op === 'COPY' && i.args.includes('entrypoint.sh'))?.args ?? '', /--chmod=0755/);
    const hc = rt.instructions.find((i) => i.op === 'HEALTHCHECK')?.args ?? '';
    assert.deepEqual(execForm(hc.slice(hc.indexOf('CMD'))), [copied.dest, 'healthcheck']);
    assert.ok(fs.statSync(ENTRYPOINT).mode & 0o100, 'entrypoint.sh is not executable in the repository');
  });

  it('the production image leaves the listen addresses to the config file; the dev image listens on the ports it exposes; the config path exists', () => {
    const env = stageEnv('production');
    assert.equal(env.HSMGW_LISTEN, undefined, 'a baked-in HSMGW_LISTEN would override the config file');
    assert.equal(env.HSMGW_METRICS_LISTEN, undefined, 'a baked-in HSMGW_METRICS_LISTEN would override the config file');
    const dev = stageEnv('dev');
    const exposed = (stage('runtime').instructions.find((i) => i.op === 'EXPOSE')?.args ?? '').split(/\s+/).map(Number).sort();
    const listening = [dev.HSMGW_LISTEN, dev.HSMGW_METRICS_LISTEN].map((l) => Number(l.split(':').pop())).sort();
    assert.deepEqual(exposed, listening);
    assert.match(dev.HSMGW_LISTEN, /^0\.0\.0\.0:/);
    assert.match(dev.HSMGW_METRICS_LISTEN, /^0\.0\.0\.0:/);
    assert.equal(path.dirname(env.HSMGW_CONFIG), '/etc/hsm-gateway');
    assert.match(stage('runtime').instructions.filter((i) => i.op === 'RUN').map((i) => i.args).join('\n'), /mkdir -p \/etc\/hsm-gateway \/opt\/hsm\/lib \/var\/lib\/hsm-gateway/);
    assert.equal(stageEnv('dev').HSMGW_CONFIG, '', 'the dev image must run the embedded default (empty HSMGW_CONFIG)');
    assert.match(stage('dev').instructions.map((i) => i.args).join('\n'), /apt-get install -y --no-install-recommends softhsm2/);
  });

  it('every file it copies exists here: context files in the repository, build files in this build', () => {
    const ignored = fs.readFileSync(deployPath('docker', 'Dockerfile.dockerignore'), 'utf8').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
    for (const s of dockerfile()) {
      for (const c of copies(s)) {
        for (const src of c.sources) {
          if (c.from === 'build' && src === '/app') {
            // The user's install: the build stage packs both packages and installs the tarballs.
            const runs = stage('build').instructions.filter((i) => i.op === 'RUN').map((i) => i.args).join('\n');
            assert.match(runs, /npm pack --ignore-scripts --pack-destination \/pkg/);
            assert.match(runs, /npm pack --ignore-scripts --workspace client --pack-destination \/pkg/);
            assert.match(runs, /npm install --omit=dev [^\n]*\/pkg\/hsm-gateway-client-\*\.tgz \/pkg\/hsm-gateway-\[0-9\]\*\.tgz/);
            assert.ok(stage('build').instructions.some((i) => i.op === 'WORKDIR' && i.args === '/app'), 'the build stage installs in /app');
          } else if (c.from === 'build') {
            assert.ok(fs.existsSync(path.join(REPO_ROOT, src.replace(/^\/src\//, ''))), `stage ${s.name}: COPY --from=build ${src}: not produced by the build`);
          } else if (!c.from) {
            if (src === '.' || src === './') continue;
            assert.ok(fs.existsSync(path.join(REPO_ROOT, src)), `stage ${s.name}: COPY ${src}: not in the repository`);
            assert.ok(!ignored.some((p) => src === p || src.startsWith(`${p}/`)), `stage ${s.name}: COPY ${src} is excluded by Dockerfile.dockerignore`);
          }
        }
      }
    }
    // The build stage builds from sources, so those must not be ignored.
    for (const needed of ['server', 'client', 'proto', 'scripts', 'bin', 'package.json', 'package-lock.json', 'tsconfig.json']) {
      assert.ok(!ignored.includes(needed), `${needed} is excluded from the build context`);
    }
  });
});

describe('entrypoint.sh', () => {
  let env: TestEnvironment;
  let layout: ReturnType<typeof imageLayout>;
  before(async () => {
    env = await testEnvironment();
    layout = imageLayout();
  });
  after(() => { if (layout) fs.rmSync(layout.root, { recursive: true, force: true }); });

  function writeConfig(): string {
    const file = path.join(layout.root, 'config.yaml');
    fs.writeFileSync(file, toYaml(testConfigDocument(env)));
    return file;
  }

  it('serve: the gateway runs from the image layout; healthcheck turns 0 when ready; it signs; SIGTERM exits 0', async () => {
    const [grpcPort, httpPort] = [await freePort(), await freePort()];
    const child = start(bash, [layout.entrypoint, 'serve'], {
      cwd: layout.root,
      env: entryEnv({ HSMGW_APP_DIR: layout.appDir, HSMGW_CONFIG: writeConfig(), HSMGW_LISTEN: `127.0.0.1:${grpcPort}`, HSMGW_METRICS_LISTEN: `127.0.0.1:${httpPort}` }),
    });
    let client: GatewayClient | undefined;
    try {
      // The image's HEALTHCHECK, with the image's 0.0.0.0 listen address.
      const health = (): number | null => run(bash, [layout.entrypoint, 'healthcheck'], { env: entryEnv({ HSMGW_APP_DIR: layout.appDir, HSMGW_METRICS_LISTEN: `0.0.0.0:${httpPort}` }) }).status;
      await waitFor('healthcheck to pass', async () => {
        assert.equal(child.output().includes('Error') && /exit|Cannot find module/.test(child.output()), false, child.output());
        return health() === 0 ? true : undefined;
      }, 20_000, 200);
      client = new GatewayClient({
        endpoints: [`localhost:${grpcPort}`], ca: fs.readFileSync(env.pki.ca), cert: fs.readFileSync(env.pki.clients.dev.cert), key: fs.readFileSync(env.pki.clients.dev.key), maxRetries: 0, deadlineMs: 5000,
      });
      const sig = await client.sign('dev-ec', 'ECDSA_SHA256', crypto.createHash('sha256').update('image').digest());
      assert.ok(sig.length > 0);
      client.close();
      client = undefined;
      // node is exec'd: the shell's pid is the gateway's, and SIGTERM stops it gracefully.
      child.kill('SIGTERM');
      const exit = await child.wait(15_000);
      assert.deepEqual(exit, { code: 0, signal: null }, child.output());
      assert.notEqual(health(), 0, 'healthcheck passes with the gateway stopped');
    } finally {
      client?.close();
      child.kill('SIGKILL');
    }
  });

  it('serve without a config runs the embedded default in HSMGW_STATE_DIR (the dev image)', async () => {
    const [grpcPort, httpPort] = [await freePort(), await freePort()];
    const state = path.join(layout.root, 'state');
    const child = start(bash, [layout.entrypoint], {
      cwd: layout.root,
      env: entryEnv({ HSMGW_APP_DIR: layout.appDir, HSMGW_CONFIG: '', HSMGW_STATE_DIR: state, HSMGW_LISTEN: `127.0.0.1:${grpcPort}`, HSMGW_METRICS_LISTEN: `127.0.0.1:${httpPort}` }),
    });
    try {
      await waitFor('the embedded default to be ready', async () => (run(bash, [layout.entrypoint, 'healthcheck'], { env: entryEnv({ HSMGW_METRICS_LISTEN: `127.0.0.1:${httpPort}` }) }).status === 0 ? true : undefined), 30_000, 250);
      assert.ok(fs.existsSync(path.join(state, 'config.yaml')));
      assert.ok(fs.existsSync(path.join(state, 'pki', 'client.pem')));
      child.kill('SIGTERM');
      assert.deepEqual(await child.wait(15_000), { code: 0, signal: null }, child.output());
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('healthcheck fails when nothing answers', async () => {
    const port = await freePort();
    const r = run(bash, [ENTRYPOINT, 'healthcheck'], { env: entryEnv({ HSMGW_METRICS_LISTEN: `0.0.0.0:${port}` }) });
    assert.equal(r.status, 1, describeRun(r));
  });

  it('refuses to start, with exit 2 and one line naming the problem, on a missing config, module, PIN or state directory', () => {
    const dir = tempDir('entrypoint');
    const emptyPin = path.join(dir, 'pin');
    fs.writeFileSync(emptyPin, '', { mode: 0o600 });
    const aFile = path.join(dir, 'file');
    fs.writeFileSync(aFile, 'x');
    const cases: Array<[string, Record<string, string>, string[], RegExp]> = [
      ['missing config', { HSMGW_CONFIG: path.join(dir, 'nope.yaml') }, [], /^entrypoint: config file .*nope\.yaml does not exist$/],
      ['--config wins over HSMGW_CONFIG', { HSMGW_CONFIG: writeConfig() }, ['--config', path.join(dir, 'other.yaml')], /config file .*other\.yaml does not exist/],
      ['config is a directory', { HSMGW_CONFIG: dir }, [], /is not a regular file/],
      ['missing module', { HSMGW_CONFIG: writeConfig(), HSMGW_PKCS11_MODULE: '/opt/hsm/lib/libnope.so' }, [], /^entrypoint: PKCS#11 module \(HSMGW_PKCS11_MODULE\) \/opt\/hsm\/lib\/libnope\.so does not exist$/],
      ['empty PIN file', { HSMGW_CONFIG: writeConfig(), HSMGW_PIN_FILE: emptyPin }, [], /^entrypoint: PIN file \(HSMGW_PIN_FILE\) .* is empty$/],
      ['no config, state dir impossible', { HSMGW_CONFIG: '', HSMGW_STATE_DIR: path.join(aFile, 'state') }, [], /state directory .* cannot be created/],
      ['not installed', { HSMGW_APP_DIR: path.join(dir, 'no-app'), HSMGW_CONFIG: writeConfig() }, [], /the gateway is not installed/],
    ];
    for (const shell of [bash, which('sh') ?? '/bin/sh']) {
      for (const [name, extra, args, expected] of cases) {
        const r = run(shell, [layout.entrypoint, 'serve', ...args], { env: entryEnv({ HSMGW_APP_DIR: layout.appDir, ...extra }) });
        assert.equal(r.status, 2, `${shell} ${name}: ${describeRun(r)}`);
        assert.match(r.stderr.trim(), expected, `${shell} ${name}`);
        assert.equal(r.stderr.trim().split('\n').length, 1, `${shell} ${name}: one line`);
      }
    }
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('passes other commands to the CLI', () => {
    const r = run(bash, [layout.entrypoint, '--help'], { env: entryEnv({ HSMGW_APP_DIR: layout.appDir }) });
    assert.equal(r.status, 0, describeRun(r));
    assert.match(r.stdout + r.stderr, /serve/);
  });
});

describe('compose.yaml', () => {
  type Service = { build?: { context: string; dockerfile: string; target: string }; image?: string; command?: string[]; environment?: Record<string, string>; ports?: string[]; volumes?: string[]; network_mode?: string; healthcheck?: { test: string[] }; depends_on?: unknown };
  const composeDir = deployPath('docker');
  const compose = (): { services: Record<string, Service>; volumes: Record<string, unknown> } => parseYaml(fs.readFileSync(path.join(composeDir, 'compose.yaml'), 'utf8')) as { services: Record<string, Service>; volumes: Record<string, unknown> };

  it('builds the dev target of the Dockerfile from the repository root', () => {
    const { gateway } = compose().services;
    assert.ok(gateway.build);
    assert.equal(path.resolve(composeDir, gateway.build.context), REPO_ROOT);
    assert.ok(fs.existsSync(path.join(REPO_ROOT, gateway.build.dockerfile)));
    assert.ok(dockerfile().some((s) => s.name === gateway.build?.target));
    assert.equal(gateway.build.target, 'dev');
  });

  it('its ports, health check, volumes and scrape target agree with the image and each other', () => {
    const { services, volumes } = compose();
    const { gateway, demo, prometheus } = services;
    const published = new Map((gateway.ports ?? []).map((p) => { const [host, hostPort, cPort] = p.split(':'); return [Number(cPort), `${host}:${hostPort}`]; }));
    const grpc = Number(gateway.environment?.HSMGW_LISTEN.split(':').pop());
    const metrics = Number(gateway.environment?.HSMGW_METRICS_LISTEN.split(':').pop());
    assert.ok(published.has(grpc) && published.has(metrics) && published.has(8444), `published: ${[...published.keys()]}`);
    for (const hostSide of published.values()) assert.match(hostSide, /^127\.0\.0\.1:/, 'publish on loopback only');
    const hc = stage('runtime').instructions.find((i) => i.op === 'HEALTHCHECK')?.args ?? '';
    assert.deepEqual(gateway.healthcheck?.test, ['CMD', ...execForm(hc.slice(hc.indexOf('CMD')))]);
    assert.equal(demo.network_mode, 'service:gateway', 'the demo dials 127.0.0.1 (the dev certificate names only localhost)');
    assert.equal(demo.image, gateway.image);
    for (const svc of Object.values(services)) {
      for (const v of svc.volumes ?? []) {
        const [src] = v.split(':');
        if (src.startsWith('.')) assert.ok(fs.existsSync(path.resolve(composeDir, src)), `volume source ${src} does not exist`);
        else assert.ok(src in volumes, `named volume ${src} is not declared`);
      }
    }
    const promConfig = parseYaml(fs.readFileSync(path.join(composeDir, 'prometheus.yml'), 'utf8')) as { scrape_configs: Array<{ job_name: string; static_configs: Array<{ targets: string[] }> }> };
    assert.deepEqual(promConfig.scrape_configs.find((s) => s.job_name === 'hsm-gateway')?.static_configs[0].targets, [`gateway:${metrics}`]);
    assert.ok((prometheus.volumes ?? []).some((v) => v.startsWith('../prometheus/alerts.yml:')), 'Prometheus does not get the shipped alerts');
  });
});
