/**
 * A real Prometheus server (Debian package `prometheus`) on loopback, configured from the
 * shipped deploy/prometheus/prometheus.yml with only the target and intervals adapted, scrapes a
 * running gateway. The target is up, PromQL returns the sign counters, the shipped alert rules
 * load and evaluate, and every dashboard expression is valid PromQL for that server.
 */
import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parse as parseYaml, stringify as toYaml } from 'yaml';
import { startTestGateway, type TestGateway } from '../support/test-gateway';
import { deployPath, freePort, httpStatus, start, tempDir, waitFor, which, type Child } from './support/deploy-files';
import { dashboardExpressions, readAlertRules, readDashboard, substituteGrafanaVariables } from './support/dashboard';

const prometheusBin = which('prometheus');
const SKIP = prometheusBin ? false : 'prometheus is not installed (Debian package prometheus; .ci/run installs it)';

interface ApiResponse<T> { status: string; data: T; error?: string; errorType?: string }
interface VectorSample { metric: Record<string, string>; value: [number, string] }

describe('Prometheus scraping a live gateway', { skip: SKIP }, () => {
  let gw: TestGateway;
  let prom: Child | undefined;
  let api: string;
  let dir: string;

  async function get<T>(pathAndQuery: string): Promise<ApiResponse<T>> {
    const res = await fetch(`${api}${pathAndQuery}`, { signal: AbortSignal.timeout(5000) });
    return (await res.json()) as ApiResponse<T>;
  }

  async function query(expr: string): Promise<ApiResponse<{ resultType: string; result: VectorSample[] }>> {
    return get(`/api/v1/query?query=${encodeURIComponent(expr)}`);
  }

  async function signCounts(): Promise<Map<string, number>> {
    const r = await query('sum by (key, algorithm, code) (hsmgw_sign_requests_total{job="hsm-gateway"})');
    assert.equal(r.status, 'success', JSON.stringify(r));
    return new Map(r.data.result.map((s) => [`${s.metric.key} ${s.metric.algorithm} ${s.metric.code}`, Number(s.value[1])]));
  }

  async function sign(n: number, key: string, alg: 'ECDSA_SHA256' | 'RSA_PSS_SHA256'): Promise<void> {
    const client = gw.client();
    for (let i = 0; i < n; i++) await client.sign(key, alg, crypto.randomBytes(32));
  }

  before(async () => {
    gw = await startTestGateway();
    await sign(5, 'dev-ec', 'ECDSA_SHA256');
    await sign(3, 'dev-rsa', 'RSA_PSS_SHA256');

    // The shipped config, adapted: the gateway's loopback metrics port as the only target and
    // 1 s intervals so the test is quick. Everything else (job name, path, rule file) is as shipped.
    dir = tempDir('prometheus');
    const config = parseYaml(fs.readFileSync(deployPath('prometheus', 'prometheus.yml'), 'utf8')) as {
      global: Record<string, string>;
      rule_files: string[];
      scrape_configs: Array<{ job_name: string; scrape_interval?: string; scrape_timeout?: string; static_configs: Array<{ targets: string[] }> }>;
    };
    const job = config.scrape_configs.find((s) => s.job_name === 'hsm-gateway');
    assert.ok(job, 'prometheus.yml has no job hsm-gateway');
    const target = new URL(gw.metricsUrl).host;
    job.static_configs = [{ targets: [target] }];
    job.scrape_interval = '1s';
    job.scrape_timeout = '1s';
    config.global.scrape_interval = '1s';
    config.global.evaluation_interval = '1s';
    fs.writeFileSync(path.join(dir, 'prometheus.yml'), toYaml(config));
    for (const f of config.rule_files) fs.copyFileSync(deployPath('prometheus', f), path.join(dir, f));

    const port = await freePort();
    api = `http://127.0.0.1:${port}`;
    prom = start(prometheusBin as string, [
      `--config.file=${path.join(dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${path.join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--log.level=warn',
    ]);
    const p = prom;
    await waitFor('Prometheus /-/ready', async () => {
      if (p.output().includes('level=error') && p.output().includes('Error loading config')) throw new Error(p.output());
      return (await httpStatus(`${api}/-/ready`)) === 200 ? true : undefined;
    }, 20_000);
  });

  after(async () => {
    if (prom) {
      prom.kill('SIGTERM');
      await prom.wait(10_000).catch(() => prom?.kill('SIGKILL'));
    }
    await gw?.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('the gateway target is up', async () => {
    const health = await waitFor('target health up', async () => {
      const r = await get<{ activeTargets: Array<{ labels: Record<string, string>; health: string; lastError: string; scrapeUrl: string }> }>('/api/v1/targets');
      const t = r.data.activeTargets.find((a) => a.labels.job === 'hsm-gateway');
      return t && t.health !== 'unknown' ? t : undefined;
    });
    assert.equal(health.health, 'up', `target ${health.scrapeUrl}: ${health.lastError}`);
    assert.equal(health.scrapeUrl, gw.metricsUrl);
    const up = await query('up{job="hsm-gateway"}');
    assert.equal(up.data.result[0]?.value[1], '1');
  });

  it('a PromQL query returns the sign counters, and follows new signatures', async () => {
    const first = await waitFor('sign counters', async () => {
      const c = await signCounts();
      return c.size > 0 ? c : undefined;
    });
    assert.equal(first.get('dev-ec ECDSA_SHA256 OK'), 5);
    assert.equal(first.get('dev-rsa RSA_PSS_SHA256 OK'), 3);
    await sign(2, 'dev-ec', 'ECDSA_SHA256');
    const next = await waitFor('the counter to reach 7', async () => {
      const c = await signCounts();
      return c.get('dev-ec ECDSA_SHA256 OK') === 7 ? c : undefined;
    });
    assert.equal(next.get('dev-rsa RSA_PSS_SHA256 OK'), 3);
  });

  it('the shipped alert rules load and evaluate without errors', async () => {
    const expected = readAlertRules().map((r) => r.alert).sort();
    const rules = await waitFor('every rule evaluated', async () => {
      const r = await get<{ groups: Array<{ rules: Array<{ name: string; type: string; health: string; lastError?: string; lastEvaluation: string }> }> }>('/api/v1/rules');
      const all = r.data.groups.flatMap((g) => g.rules);
      return all.length === expected.length && all.every((x) => !x.lastEvaluation.startsWith('0001')) ? all : undefined;
    });
    assert.deepEqual(rules.map((r) => r.name).sort(), expected);
    for (const r of rules) assert.equal(r.health, 'ok', `${r.name}: ${r.lastError}`);
    // The gateway is up and serving: neither HSM-unavailable nor down is pending or firing.
    const active = await get<{ alerts: Array<{ labels: Record<string, string>; state: string }> }>('/api/v1/alerts');
    const names = active.data.alerts.map((a) => a.labels.alertname);
    assert.ok(!names.includes('HsmGatewayDown') && !names.includes('HsmGatewayHsmUnavailable'), `unexpected alerts: ${names}`);
  });

  it('every dashboard expression is valid PromQL for this server, and the throughput panel has data', async () => {
    for (const { where, expr } of dashboardExpressions(readDashboard())) {
      const r = await query(substituteGrafanaVariables(expr));
      assert.equal(r.status, 'success', `${where}: ${r.errorType}: ${r.error}\n${expr}`);
    }
    const throughput = dashboardExpressions(readDashboard()).find((e) => /sum by \(key, code\)/.test(e.expr));
    assert.ok(throughput);
    const r = await query(substituteGrafanaVariables(throughput.expr).replace('[1m]', '[30s]'));
    assert.ok(r.data.result.some((s) => s.metric.key === 'dev-ec' && s.metric.code === 'OK'), JSON.stringify(r.data.result));
  });
});
