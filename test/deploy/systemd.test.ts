/**
 * deploy/systemd: `systemd-analyze verify` and `systemd-analyze security --offline` on the unit,
 * and the unit's paths and credential wiring against the package layout.
 */
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { deployPath, describeRun, REPO_ROOT, run, tempDir, which } from './support/deploy-files';

const UNIT = deployPath('systemd', 'hsm-gateway.service');
const analyze = which('systemd-analyze');
const SKIP = analyze ? false : 'systemd-analyze is not installed (Debian package systemd)';

/** Directive values of the unit (all occurrences), ignoring comments. */
function directives(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line.trim());
    if (m) out.set(m[1], [...(out.get(m[1]) ?? []), m[2]]);
  }
  return out;
}

/**
 * A copy of the unit in a temp dir. ExecStart names /usr/bin/node, as installed on the target;
 * verify checks that it exists, so where this machine's node lives elsewhere the copy names it.
 */
function unitCopy(text = fs.readFileSync(UNIT, 'utf8')): { dir: string; file: string; note: string } {
  const dir = tempDir('systemd');
  let note = '';
  if (!fs.existsSync('/usr/bin/node')) {
    text = text.replace(/^ExecStart=\/usr\/bin\/node /m, `ExecStart=${process.execPath} `);
    note = ` (ExecStart's /usr/bin/node replaced by ${process.execPath})`;
  }
  const file = path.join(dir, 'hsm-gateway.service');
  fs.writeFileSync(file, text);
  return { dir, file, note };
}

describe('systemd unit', () => {
  it('systemd-analyze verify reports nothing', { skip: SKIP }, (t) => {
    const { dir, file, note } = unitCopy();
    if (note) t.diagnostic(note);
    const r = run(analyze as string, ['verify', file]);
    fs.rmSync(dir, { recursive: true, force: true });
    assert.equal(r.status, 0, describeRun(r));
    // Unknown or misspelled directives are warnings with exit 0: any line about the unit fails.
    assert.deepEqual(r.stderr.split('\n').filter((l) => l.includes('hsm-gateway.service')), [], describeRun(r));
  });

  it('systemd-analyze verify catches a misspelled directive (the check is not vacuous)', { skip: SKIP }, () => {
    const { dir, file } = unitCopy(fs.readFileSync(UNIT, 'utf8').replace('NoNewPrivileges=yes', 'NoNewPrivilege=yes'));
    const r = run(analyze as string, ['verify', file]);
    fs.rmSync(dir, { recursive: true, force: true });
    assert.match(r.stderr, /hsm-gateway\.service:\d+: Unknown key 'NoNewPrivilege'/);
  });

  it('systemd-analyze security --offline rates the exposure 2.5 or better', { skip: SKIP }, (t) => {
    const { dir, file } = unitCopy();
    const r = run(analyze as string, ['security', '--offline=true', '--threshold=25', '--no-pager', file]);
    fs.rmSync(dir, { recursive: true, force: true });
    if (/unrecognized option|Unknown option/.test(r.stderr)) {
      t.skip(`this systemd-analyze has no offline security analysis: ${r.stderr.trim()}`);
      return;
    }
    const m = /Overall exposure level for hsm-gateway\.service: ([\d.]+)/.exec(r.stdout);
    assert.ok(m, describeRun(r));
    t.diagnostic(`exposure ${m[1]}`);
    assert.ok(Number(m[1]) <= 2.5, `exposure ${m[1]} > 2.5\n${r.stdout}`);
    assert.equal(r.status, 0, describeRun(r));
  });

  it('runs the packaged CLI as the sysusers user, with the PIN from a credential, and is hardened', () => {
    const d = directives(fs.readFileSync(UNIT, 'utf8'));
    const exec = d.get('ExecStart')?.[0] ?? '';
    const m = /^\/usr\/bin\/node \/opt\/hsm-gateway\/(\S+) serve --config (\S+)$/.exec(exec);
    assert.ok(m, `ExecStart: ${exec}`);
    assert.ok(fs.existsSync(path.join(REPO_ROOT, m[1])), `the package has no ${m[1]}`);
    const sysusers = fs.readFileSync(deployPath('systemd', 'hsm-gateway.sysusers.conf'), 'utf8');
    const user = d.get('User')?.[0];
    assert.match(sysusers, new RegExp(`^u\\s+${user}\\s`, 'm'), `sysusers does not create ${user}`);
    // LoadCredential=NAME:PATH and HSMGW_PIN_FILE=%d/NAME must agree.
    const [credName] = (d.get('LoadCredential')?.[0] ?? '').split(':');
    assert.ok((d.get('Environment') ?? []).includes(`HSMGW_PIN_FILE=%d/${credName}`), 'HSMGW_PIN_FILE does not point at the credential');
    for (const [k, v] of [['NoNewPrivileges', 'yes'], ['ProtectSystem', 'strict'], ['ProtectHome', 'yes'], ['PrivateTmp', 'yes'], ['CapabilityBoundingSet', ''], ['RestartPreventExitStatus', '2'], ['KillSignal', 'SIGTERM']]) {
      assert.equal(d.get(k)?.[0], v, `${k}=${v}`);
    }
    assert.ok(!d.has('MemoryDenyWriteExecute'), 'MemoryDenyWriteExecute breaks V8');
    assert.equal(d.get('LogRateLimitIntervalSec')?.[0], '0', 'journald must not rate-limit (drop) audit lines');
    assert.match(d.get('ExecReload')?.[0] ?? '', /kill -HUP \$MAINPID/);
  });
});

describe('systemd unit of the agent', () => {
  const AGENT_UNIT = deployPath('systemd', 'hsm-gateway-agent.service');

  it('systemd-analyze verify reports nothing; the exposure is 2.5 or better', { skip: SKIP }, (t) => {
    const dir = tempDir('systemd-agent');
    let text = fs.readFileSync(AGENT_UNIT, 'utf8');
    if (!fs.existsSync('/usr/bin/node')) text = text.replace(/^ExecStart=\/usr\/bin\/node /m, `ExecStart=${process.execPath} `);
    const file = path.join(dir, 'hsm-gateway-agent.service');
    fs.writeFileSync(file, text);
    const verify = run(analyze as string, ['verify', file]);
    assert.equal(verify.status, 0, describeRun(verify));
    assert.deepEqual(verify.stderr.split('\n').filter((l) => l.includes('hsm-gateway-agent.service')), [], describeRun(verify));
    const security = run(analyze as string, ['security', '--offline=true', '--threshold=25', '--no-pager', file]);
    fs.rmSync(dir, { recursive: true, force: true });
    if (/unrecognized option|Unknown option/.test(security.stderr)) return t.skip('no offline security analysis here');
    const m = /Overall exposure level for hsm-gateway-agent\.service: ([\d.]+)/.exec(security.stdout);
    assert.ok(m, describeRun(security));
    t.diagnostic(`exposure ${m[1]}`);
    assert.ok(Number(m[1]) <= 2.5, `exposure ${m[1]} > 2.5`);
  });

  it('runs the packaged agent with its socket in the runtime directory and the client key from a credential', () => {
    const d = directives(fs.readFileSync(AGENT_UNIT, 'utf8').replace(/\\\n\s*/g, ''));
    const exec = d.get('ExecStart')?.[0] ?? '';
    const m = /^\/usr\/bin\/node \/opt\/hsm-gateway\/(\S+) agent /.exec(exec);
    assert.ok(m, `ExecStart: ${exec}`);
    assert.ok(fs.existsSync(path.join(REPO_ROOT, m[1])), `the package has no ${m[1]}`);
    assert.match(exec, new RegExp(`--socket /run/${d.get('RuntimeDirectory')?.[0]}/agent\\.sock `));
    const [credential] = (d.get('LoadCredential')?.[0] ?? '').split(':');
    assert.match(exec, new RegExp(`--key-file %d/${credential} `));
    for (const [k, v] of [['NoNewPrivileges', 'yes'], ['ProtectSystem', 'strict'], ['CapabilityBoundingSet', ''], ['KillSignal', 'SIGTERM']]) assert.equal(d.get(k)?.[0], v, `${k}=${v}`);
    assert.match(d.get('ExecReload')?.[0] ?? '', /kill -HUP \$MAINPID/);
  });
});
