/**
 * `npm run nginx-demo [-- --key dev-rsa]`: Debian's nginx terminating HTTPS on 127.0.0.1:8445
 * (HSMGW_NGINX_LISTEN) with the token's dev-ec (or dev-rsa) certificate and a keyless key: the
 * standalone provider asks `hsm-gateway agent` for each handshake signature and the agent asks the
 * gateway. Starts the gateway on the embedded default when none answers, installs nginx with
 * apt-get when it is missing and the demo runs as root. nginx's prefix and all its files live in
 * $HSMGW_STATE_DIR/nginx (the agent's socket in a temporary directory others may traverse); Ctrl-C stops nginx, the agent and the gateway it started.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { PROVIDER_MODULE, providerOpensslConf } from '../client/agent/provider-config';
import { parseHostPort } from '../common/names';
import { defaultStateDir } from '../server/bootstrap/embedded-default';
import { DEFAULT_HTTP_LISTEN } from '../server/config/load-config';
import { CLI, ensureDemoGateway, type DemoGateway } from './support/demo-gateway';

const NGINX_LISTEN = process.env.HSMGW_NGINX_LISTEN ?? '127.0.0.1:8445';
const AGENT_METRICS = process.env.HSMGW_AGENT_METRICS_LISTEN ?? '127.0.0.1:9465';
const log = (line: string): void => console.log(`nginx-demo: ${line}`);
const isRoot = process.getuid?.() === 0;

function nginxInstalled(): boolean {
  return spawnSync('nginx', ['-v'], { stdio: 'ignore' }).status === 0;
}

function ensureNginx(): void {
  if (nginxInstalled()) return;
  if (!isRoot) throw new Error('nginx is not installed: run `sudo apt-get install nginx` (or run this demo as root to let it install nginx)');
  log('installing nginx (apt-get install nginx)...');
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  for (const args of [['update', '-qq'], ['install', '-y', '-qq', 'nginx']]) {
    if (spawnSync('apt-get', args, { stdio: 'inherit', env }).status !== 0) throw new Error(`apt-get ${args.join(' ')} failed`);
  }
}

function cliArgs(gateway: DemoGateway): string[] {
  return ['--endpoint', gateway.endpoint, '--ca', gateway.pki.ca, '--cert', gateway.pki.cert, '--key-file', gateway.pki.key];
}

/** Runs the CLI to completion; throws with its output when it fails. */
function runCli(args: string[]): void {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`hsm-gateway ${args[0]} failed: ${r.stderr || r.stdout}`);
}

async function startAgent(gateway: DemoGateway): Promise<{ child: ChildProcess; socket: string }> {
  // Not in the state directory (0700: it holds the PIN). The socket's directory is traversable
  // but not listable; the socket is 0660, group nogroup, so nginx's workers (nobody:nogroup when
  // nginx starts as root) may connect.
  const socketDir = fs.mkdtempSync(path.join(os.tmpdir(), 'hsmgw-nginx-demo-'));
  fs.chmodSync(socketDir, 0o711);
  process.once('exit', () => fs.rmSync(socketDir, { recursive: true, force: true }));
  const socket = path.join(socketDir, 'agent.sock');
  const me = String(process.getuid?.() ?? 0);
  const args = ['agent', '--socket', socket, '--metrics-listen', AGENT_METRICS, ...cliArgs(gateway),
    ...(isRoot ? ['--socket-group', 'nogroup', '--allow-uid', 'nobody,root'] : ['--allow-uid', me])];
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout?.on('data', (b: Buffer) => { out += b.toString(); });
  for (let i = 0; i < 300 && !out.includes('"agent listening"'); i++) {
    if (child.exitCode !== null) throw new Error(`the agent exited with code ${child.exitCode}: ${out}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  if (!out.includes('"agent listening"')) throw new Error(`the agent did not start: ${out}`);
  child.stdout?.removeAllListeners('data');
  child.stdout?.resume();
  return { child, socket };
}

function nginxConf(prefix: string, files: { crt: string; key: string }): string {
  const temp = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((t) => `${t}_temp_path ${prefix}/tmp;`).join(' ');
  return `# Written by npm run nginx-demo: nginx with a keyless key (OPENSSL_CONF loads hsmgw-provider.so).
worker_processes 2;
daemon off;
error_log stderr notice;
pid ${prefix}/nginx.pid;
env OPENSSL_CONF;
events { worker_connections 512; }
http {
  access_log off;
  ${temp}
  server {
    listen ${NGINX_LISTEN} ssl;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_certificate ${files.crt};
    ssl_certificate_key ${files.key};   # a keyless PEM: names the key, holds no secret
    location / { return 200 "hello from nginx with a keyless key: the private key never left the HSM\\n"; }
  }
}
`;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { key: { type: 'string', default: 'dev-ec' } } });
  const keyName = values.key as string;
  const nginxAddress = parseHostPort(NGINX_LISTEN);
  if (!nginxAddress) throw new Error(`HSMGW_NGINX_LISTEN must be host:port (got ${JSON.stringify(NGINX_LISTEN)})`);
  if (!fs.existsSync(PROVIDER_MODULE)) throw new Error(`${PROVIDER_MODULE} is missing: run \`npm run build:provider\` (it needs libssl-dev)`);
  ensureNginx();
  const gateway = await ensureDemoGateway(log);
  const children: ChildProcess[] = [];
  const stop = (): void => {
    for (const child of children.reverse()) child.kill('SIGTERM');
    gateway.stop();
    setTimeout(() => process.exit(0), 500).unref();
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    const dir = path.join(defaultStateDir(), 'nginx');
    const prefix = dir;
    fs.mkdirSync(path.join(prefix, 'tmp'), { recursive: true });
    runCli(['keyless-pem', '--key', keyName, '--out', dir, ...cliArgs(gateway)]);
    const files = { crt: path.join(dir, `${keyName}.crt`), key: path.join(dir, `${keyName}.key`) };
    for (const file of Object.values(files)) fs.chmodSync(file, 0o644); // nginx's workers read them; they hold no secret

    const agent = await startAgent(gateway);
    children.push(agent.child);
    const opensslConf = path.join(dir, 'openssl.cnf');
    fs.writeFileSync(opensslConf, providerOpensslConf({ agentSocket: agent.socket }));
    const conf = path.join(prefix, 'nginx.conf');
    fs.writeFileSync(conf, nginxConf(prefix, files));
    const nginx = spawn('nginx', ['-p', prefix, '-c', conf], { stdio: ['ignore', 'inherit', 'inherit'], env: { ...process.env, OPENSSL_CONF: opensslConf } });
    children.push(nginx);
    nginx.once('exit', (code) => {
      log(`nginx exited (${code}); stopping`);
      stop();
    });
    const { host, port } = nginxAddress;
    log(`nginx on https://${host}:${port}/ with the token's ${keyName} certificate; its key stays in the HSM`);
    log(`try:  curl --cacert ${files.crt} --resolve localhost:${port}:${host} https://localhost:${port}/`);
    log(`metrics: the gateway's on http://${process.env.HSMGW_METRICS_LISTEN || DEFAULT_HTTP_LISTEN}/metrics, the agent's on http://${AGENT_METRICS}/metrics; nginx's files in ${dir}`);
    log('Ctrl-C stops nginx, the agent and the gateway if the demo started it.');
  } catch (err) {
    stop();
    throw err;
  }
}

main().catch((err: unknown) => {
  console.error(`nginx-demo: ${(err as Error).message}`);
  process.exitCode = 1;
});
