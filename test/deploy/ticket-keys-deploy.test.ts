/**
 * The ticket-key deploy files: the systemd service and timer pass `systemd-analyze verify`, the
 * service's command line parses as a ticket-keys invocation, and the Kubernetes sidecar example's
 * objects pass the API schemas with the sidecar and init container running `ticket-keys`.
 */
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { deployPath, describeRun, run, tempDir, which } from './support/deploy-files';
import { validateKubernetesObject } from './support/kubernetes-schema';

const analyze = which('systemd-analyze');
const SKIP = analyze ? false : 'systemd-analyze is not installed (Debian package systemd)';
const UNITS = ['hsm-gateway-ticket-keys.service', 'hsm-gateway-ticket-keys.timer'];

type Obj = Record<string, unknown> & { kind?: string; spec?: { template?: { spec?: { containers?: Array<{ name: string; args?: string[] }>; initContainers?: Array<{ args?: string[] }> } } } };

/** The units in a temp dir; /usr/bin/node named as this machine's node when it lives elsewhere. */
function unitCopies(edit: (text: string) => string = (t) => t): string {
  const dir = tempDir('systemd-tickets');
  for (const unit of UNITS) {
    let text = edit(fs.readFileSync(deployPath('systemd', unit), 'utf8'));
    if (!fs.existsSync('/usr/bin/node')) text = text.replace(/^ExecStart=\/usr\/bin\/node /m, `ExecStart=${process.execPath} `);
    fs.writeFileSync(path.join(dir, unit), text);
  }
  return dir;
}

describe('ticket-keys systemd units', () => {
  it('systemd-analyze verify reports nothing about the service or the timer', { skip: SKIP }, () => {
    const dir = unitCopies();
    const r = run(analyze as string, ['verify', ...UNITS.map((u) => path.join(dir, u))]);
    fs.rmSync(dir, { recursive: true, force: true });
    assert.equal(r.status, 0, describeRun(r));
    assert.deepEqual(r.stderr.split('\n').filter((l) => l.includes('hsm-gateway-ticket-keys')), [], describeRun(r));
  });

  it('a misspelled timer directive is caught (the check is not vacuous)', { skip: SKIP }, () => {
    const dir = unitCopies((t) => t.replace('OnCalendar=', 'OnCalender='));
    const r = run(analyze as string, ['verify', ...UNITS.map((u) => path.join(dir, u))]);
    fs.rmSync(dir, { recursive: true, force: true });
    assert.match(r.stderr, /hsm-gateway-ticket-keys\.timer:\d+: Unknown key 'OnCalender'/);
  });

  it('the service runs ticket-keys with a scope, a format, an output directory and nginx\'s pid file', () => {
    const text = fs.readFileSync(deployPath('systemd', 'hsm-gateway-ticket-keys.service'), 'utf8');
    const exec = /^ExecStart=(.*)$/m.exec(text)?.[1] ?? '';
    for (const flag of ['ticket-keys', '--scope web', '--format nginx', '--out /etc/nginx/ticket-keys', '--notify-pidfile /run/nginx.pid']) assert.ok(exec.includes(flag), flag);
    assert.match(text, /^ReadWritePaths=\/etc\/nginx\/ticket-keys$/m);
  });
});

describe('Kubernetes nginx sidecar example', () => {
  const objects = parseAllDocuments(fs.readFileSync(deployPath('kubernetes', 'examples', 'nginx-ticket-keys-sidecar.yaml'), 'utf8')).map((d) => d.toJS() as Obj);

  it('every object passes the Kubernetes API schema', () => {
    assert.deepEqual(objects.flatMap((o) => validateKubernetesObject(o)), []);
  });

  it('the init container writes the keys once and the sidecar watches and reloads nginx', () => {
    const pod = objects.find((o) => o.kind === 'Deployment')?.spec?.template?.spec;
    assert.ok(pod);
    const init = pod.initContainers?.[0]?.args ?? [];
    const sidecar = pod.containers?.find((c) => c.name === 'ticket-keys')?.args ?? [];
    assert.equal(init[0], 'ticket-keys');
    assert.ok(!init.includes('--watch'));
    assert.equal(sidecar[0], 'ticket-keys');
    assert.ok(sidecar.includes('--watch') && sidecar.includes('--notify-pidfile'));
    assert.equal(sidecar[sidecar.indexOf('--out') + 1], init[init.indexOf('--out') + 1]);
  });
});
