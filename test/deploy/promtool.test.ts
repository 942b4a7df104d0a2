/**
 * deploy/prometheus and the compose Prometheus config, checked by promtool (Debian package
 * `prometheus`): config and rules parse, and every alert has unit tests firing and not firing.
 */
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { deployPath, describeRun, run, tempDir, which } from './support/deploy-files';

const promtool = which('promtool');
const SKIP = promtool ? false : 'promtool is not installed (Debian package prometheus; .ci/run installs it)';

interface RuleFile { groups: Array<{ name: string; rules: Array<{ alert?: string; expr: string; annotations?: Record<string, string> }> }> }
interface RuleTests { rule_files: string[]; tests: Array<{ alert_rule_test?: Array<{ alertname: string; exp_alerts: unknown[] }> }> }

function alerts(): RuleFile['groups'][number]['rules'] {
  const doc = parseYaml(fs.readFileSync(deployPath('prometheus', 'alerts.yml'), 'utf8')) as RuleFile;
  return doc.groups.flatMap((g) => g.rules).filter((r) => r.alert);
}

describe('Prometheus files (promtool)', () => {
  it('promtool check config: deploy/prometheus/prometheus.yml and its rule file', { skip: SKIP }, () => {
    const r = run(promtool as string, ['check', 'config', deployPath('prometheus', 'prometheus.yml')]);
    assert.equal(r.status, 0, describeRun(r));
    assert.match(r.stdout, /SUCCESS: 1 rule files found/);
  });

  it('promtool check config: the compose stack\'s prometheus.yml with the shipped alerts beside it', { skip: SKIP }, () => {
    // compose.yaml mounts ../prometheus/alerts.yml next to it in the container.
    const dir = tempDir('compose-prom');
    fs.copyFileSync(deployPath('docker', 'prometheus.yml'), path.join(dir, 'prometheus.yml'));
    fs.copyFileSync(deployPath('prometheus', 'alerts.yml'), path.join(dir, 'alerts.yml'));
    const r = run(promtool as string, ['check', 'config', path.join(dir, 'prometheus.yml')]);
    fs.rmSync(dir, { recursive: true, force: true });
    assert.equal(r.status, 0, describeRun(r));
  });

  it('promtool check rules: alerts.yml', { skip: SKIP }, () => {
    const r = run(promtool as string, ['check', 'rules', deployPath('prometheus', 'alerts.yml')]);
    assert.equal(r.status, 0, describeRun(r));
    assert.match(r.stdout, new RegExp(`SUCCESS: ${alerts().length} rules found`));
  });

  it('promtool test rules: alerts.test.yml passes', { skip: SKIP }, () => {
    const r = run(promtool as string, ['test', 'rules', 'alerts.test.yml'], { cwd: deployPath('prometheus') });
    assert.equal(r.status, 0, describeRun(r));
    assert.match(r.stdout, /SUCCESS/);
  });

  it('every alert has a unit test where it fires and one where it does not', () => {
    const doc = parseYaml(fs.readFileSync(deployPath('prometheus', 'alerts.test.yml'), 'utf8')) as RuleTests;
    assert.deepEqual(doc.rule_files, ['alerts.yml']);
    const cases = doc.tests.flatMap((t) => t.alert_rule_test ?? []);
    for (const { alert } of alerts()) {
      const mine = cases.filter((c) => c.alertname === alert);
      assert.ok(mine.some((c) => c.exp_alerts.length > 0), `${alert}: no test case where it fires`);
      assert.ok(mine.some((c) => c.exp_alerts.length === 0), `${alert}: no test case where it does not fire`);
    }
  });

  it('the unit tests can fail: a weakened threshold makes promtool test rules fail', { skip: SKIP }, () => {
    // Guards against a test file that passes whatever the rules say.
    const dir = tempDir('alerts-mutant');
    const rules = fs.readFileSync(deployPath('prometheus', 'alerts.yml'), 'utf8');
    const mutant = rules.replace('expr: hsmgw_hsm_ready == 0', 'expr: hsmgw_hsm_ready == 2');
    assert.notEqual(mutant, rules, 'the mutation did not apply; update this test');
    fs.writeFileSync(path.join(dir, 'alerts.yml'), mutant);
    fs.copyFileSync(deployPath('prometheus', 'alerts.test.yml'), path.join(dir, 'alerts.test.yml'));
    const r = run(promtool as string, ['test', 'rules', 'alerts.test.yml'], { cwd: dir });
    fs.rmSync(dir, { recursive: true, force: true });
    assert.notEqual(r.status, 0, describeRun(r));
    assert.match(r.stdout + r.stderr, /HsmGatewayHsmUnavailable/);
  });

  it('every alert links a runbook section that exists in docs/OPERATIONS.md', () => {
    const ops = fs.readFileSync(path.join(deployPath('..'), 'docs', 'OPERATIONS.md'), 'utf8');
    // GitHub-style anchors of the headings.
    const anchors = new Set([...ops.matchAll(/^#{1,6}\s+(.+)$/gm)].map((m) => m[1].trim().toLowerCase().replace(/[^a-z0-9 _-]/g, '').replace(/ /g, '-')));
    for (const { alert, annotations } of alerts()) {
      const url = annotations?.runbook_url ?? '';
      const m = /^docs\/OPERATIONS\.md#(.+)$/.exec(url);
      assert.ok(m, `${alert}: runbook_url ${JSON.stringify(url)} does not point into docs/OPERATIONS.md`);
      assert.ok(anchors.has(m[1]), `${alert}: docs/OPERATIONS.md has no heading for #${m[1]}`);
      assert.ok(annotations?.summary && annotations.description, `${alert}: needs summary and description`);
    }
  });
});
