import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { SignatureAlgorithm } from '../../proto/generated/hsmgateway/v1/signer';
import { verifySignature } from '../support/signatures';
import { REPO_ROOT } from '../support/test-environment';

const CLI = path.join(REPO_ROOT, 'bin', 'hsm-gateway.js');

interface Running { child: ChildProcess; grpcPort: number; httpPort: number; output: () => string }

/** Starts `hsm-gateway serve` (no config: the embedded default) and waits until it listens. */
function startServe(stateDir: string): Promise<Running> {
  const child = spawn(process.execPath, [CLI, 'serve'], {
    env: { ...process.env, HSMGW_STATE_DIR: stateDir, HSMGW_LISTEN: '127.0.0.1:0', HSMGW_METRICS_LISTEN: '127.0.0.1:0', HSMGW_CONFIG: '', SOFTHSM2_CONF: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`gateway did not start:\n${out}`)), 60_000);
    const onData = (b: Buffer): void => {
      out += b.toString();
      const m = /"msg":"gateway listening","grpc":"[^"]+:(\d+)","http":"[^"]+:(\d+)"/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({ child, grpcPort: Number(m[1]), httpPort: Number(m[2]), output: () => out });
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.on('exit', (code) => reject(new Error(`gateway exited with ${code}:\n${out}`)));
  });
}

function cli(stateDir: string, args: string[]): string {
  return execFileSync(process.execPath, [CLI, ...args], { env: { ...process.env, HSMGW_STATE_DIR: stateDir }, encoding: 'utf8' });
}

function stop(running: Running): Promise<number | null> {
  return new Promise((resolve) => {
    running.child.removeAllListeners('exit');
    running.child.on('exit', (code) => resolve(code));
    running.child.kill('SIGTERM');
  });
}

describe('the embedded default (npm start)', () => {
  it('from an empty state directory: token, keys, certificates, PKI, a working gateway; reused on the second start', { timeout: 120_000 }, async () => {
    const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'hsmgw-embedded-'));
    try {
      const first = await startServe(stateDir);
      const endpoint = `127.0.0.1:${first.grpcPort}`;
      assert.match(first.output(), /SoftHSM token "hsm-gateway-dev"/);
      assert.match(first.output(), /key "dev-ec" \(ec-p256\) generated inside the token/);
      assert.match(first.output(), /key "dev-rsa" \(rsa-2048\) generated inside the token/);
      assert.match(first.output(), /hsm-gateway sign --key dev-ec/, 'prints a ready-to-run signing command');

      const pinFile = path.join(stateDir, 'pin');
      assert.equal(fs.statSync(pinFile).mode & 0o777, 0o600);
      for (const f of ['pki/ca.pem', 'pki/client.pem', 'pki/client.key', 'pki/server.pem', 'pki/server.key']) assert.ok(fs.existsSync(path.join(stateDir, f)), f);
      assert.equal(fs.statSync(path.join(stateDir, 'pki/client.key')).mode & 0o777, 0o600);

      // The keys were generated inside the token: sensitive, never extractable.
      const pin = fs.readFileSync(pinFile, 'utf8').trim();
      const objects = execFileSync('pkcs11-tool', ['--module', '/usr/lib/softhsm/libsofthsm2.so', '--token-label', 'hsm-gateway-dev', '--login', '--pin', 'env:HSMGW_TEST_PIN', '--list-objects', '--type', 'privkey'], {
        env: { ...process.env, SOFTHSM2_CONF: path.join(stateDir, 'softhsm', 'softhsm2.conf'), HSMGW_TEST_PIN: pin }, encoding: 'utf8',
      });
      for (const label of ['dev-ec', 'dev-rsa']) {
        const block = objects.split('Private Key Object').find((b) => b.includes(`label:      ${label}`)) ?? '';
        assert.match(block, /Access:\s+sensitive, always sensitive, never extractable, local/, `${label}: ${block}`);
      }

      // The CLI signs through the gateway with the dev PKI; the signature verifies with the key's public key.
      const keys = JSON.parse(cli(stateDir, ['keys', '--json', '--endpoint', endpoint])) as Array<{ name: string; publicKey: string }>;
      assert.deepEqual(keys.map((k) => k.name), ['dev-ec', 'dev-rsa']);
      const file = path.join(stateDir, 'config.yaml');
      for (const [key, alg] of [['dev-ec', SignatureAlgorithm.ECDSA_SHA256], ['dev-rsa', SignatureAlgorithm.RSA_PSS_SHA256]] as const) {
        const sigHex = cli(stateDir, ['sign', '--key', key, '--alg', SignatureAlgorithm[alg], '--in', file, '--endpoint', endpoint]).trim();
        const spki = Buffer.from(keys.find((k) => k.name === key)?.publicKey ?? '', 'base64');
        assert.ok(verifySignature(spki, alg, fs.readFileSync(file), Buffer.from(sigHex, 'hex')), `${key} signature verifies`);
      }
      const digest = createHash('sha256').update('hello').digest('hex');
      const sig = cli(stateDir, ['sign', '--key', 'dev-ec', '--alg', 'ECDSA_SHA256', '--digest', digest, '--endpoint', endpoint]).trim();
      const ecSpki = Buffer.from(keys[0].publicKey, 'base64');
      assert.ok(verifySignature(ecSpki, SignatureAlgorithm.ECDSA_SHA256, Buffer.from('hello'), Buffer.from(sig, 'hex')));

      const metrics = await (await fetch(`http://127.0.0.1:${first.httpPort}/metrics`)).text();
      assert.match(metrics, /hsmgw_sign_requests_total\{key="dev-ec",algorithm="ECDSA_SHA256",code="OK"\} 2/);
      assert.equal(await stop(first), 0, 'SIGTERM exits 0');
      assert.match(first.output(), /"msg":"audit"|"level":"audit"/);
      assert.ok(!first.output().includes(pin), 'the PIN never appears in the output');

      const second = await startServe(stateDir);
      assert.match(second.output(), /reusing the embedded default/);
      assert.doesNotMatch(second.output(), /generated inside the token/);
      const again = cli(stateDir, ['sign', '--key', 'dev-ec', '--alg', 'ECDSA_SHA256', '--digest', digest, '--endpoint', `127.0.0.1:${second.grpcPort}`]).trim();
      assert.ok(verifySignature(ecSpki, SignatureAlgorithm.ECDSA_SHA256, Buffer.from('hello'), Buffer.from(again, 'hex')), 'same key after restart');
      assert.equal(await stop(second), 0);
    } finally {
      fs.rmSync(stateDir, { recursive: true, force: true });
    }
  });

  it('a broken config file is refused with one line naming the field and exit code 2', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hsmgw-badconfig-'));
    try {
      const file = path.join(dir, 'config.yaml');
      fs.writeFileSync(file, 'pkcs11:\n  module: /usr/lib/softhsm/libsofthsm2.so\n  token: { label: x }\n  pin: { file: pin }\n  sessions: { max: 0 }\n');
      let status = 0;
      let stderr = '';
      try {
        execFileSync(process.execPath, [CLI, 'serve', '--config', file], { encoding: 'utf8', stdio: 'pipe' });
      } catch (err) {
        status = (err as { status: number }).status;
        stderr = (err as { stderr: string }).stderr;
      }
      assert.equal(status, 2);
      assert.equal(stderr.trim(), 'config: pkcs11.sessions.max: must be an integer between 1 and 4096 (got 0)');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
