/**
 * deploy/grafana/hsm-gateway.json: it parses, is well-formed for Grafana, covers what an operator
 * needs, and every PromQL expression in it (and in the alert rules) uses only metric names that
 * a live gateway exports on /metrics.
 */
import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import { startTestGateway, type TestGateway } from '../support/test-gateway';
import { scrapeFamilies } from './support/deploy-files';
import { allPanels, dashboardExpressions, DASHBOARD_FILE, readAlertRules, readDashboard } from './support/dashboard';
import { metricFamily, promqlMetricNames, unknownMetricNames } from './support/promql-metric-names';

describe('Grafana dashboard', () => {
  it('parses as JSON and is a dashboard with a uid, a title and panels', () => {
    const d = JSON.parse(fs.readFileSync(DASHBOARD_FILE, 'utf8')) as Record<string, unknown>;
    assert.equal(typeof d.uid, 'string');
    assert.equal(typeof d.title, 'string');
    assert.ok(Array.isArray(d.panels) && d.panels.length > 0);
  });

  it('panel ids are unique, every query panel uses the $datasource variable, refIds are unique per panel', () => {
    const d = readDashboard();
    const ids = allPanels(d).map((p) => p.id);
    assert.equal(new Set(ids).size, ids.length, `duplicate panel ids: ${ids}`);
    assert.ok(d.templating.list.some((v) => v.name === 'datasource' && v.type === 'datasource'));
    for (const p of allPanels(d)) {
      if (p.type === 'row') continue;
      assert.ok(p.gridPos && p.gridPos.w > 0 && p.gridPos.h > 0 && p.gridPos.x + p.gridPos.w <= 24, `panel "${p.title}": bad gridPos`);
      assert.equal(p.datasource?.uid, '${datasource}', `panel "${p.title}" does not use the datasource variable`);
      assert.ok(p.targets && p.targets.length > 0, `panel "${p.title}" has no query`);
      const refIds = p.targets.map((t) => t.refId);
      assert.equal(new Set(refIds).size, refIds.length, `panel "${p.title}": duplicate refIds`);
      for (const t of p.targets) assert.ok(t.expr.trim().length > 0, `panel "${p.title}" ${t.refId}: empty expr`);
    }
  });

  it('covers throughput by key and status, queue vs HSM latency, pool, HSM errors, denials, certificate expiry, connections, lost log lines, memory and event-loop lag', () => {
    const names = new Set(dashboardExpressions(readDashboard()).flatMap(({ expr }) => promqlMetricNames(expr)));
    const exprs = dashboardExpressions(readDashboard()).map((e) => e.expr).join('\n');
    for (const needed of [
      'hsmgw_sign_requests_total', 'hsmgw_sign_request_duration_seconds_bucket', 'hsmgw_session_wait_seconds_bucket',
      'hsmgw_hsm_operation_seconds_bucket', 'hsmgw_pool_sessions', 'hsmgw_pool_sessions_in_use', 'hsmgw_pool_sessions_max',
      'hsmgw_pool_waiting_requests', 'hsmgw_hsm_errors_total', 'hsmgw_authorization_denials_total',
      'hsmgw_tls_certificate_expiry_timestamp_seconds', 'hsmgw_process_resident_memory_bytes', 'hsmgw_nodejs_eventloop_lag_p99_seconds',
      'hsmgw_rate_limited_total', 'hsmgw_tls_connections', 'hsmgw_tls_handshakes_in_progress', 'hsmgw_connections_refused_total',
      'hsmgw_connections_closed_total', 'hsmgw_log_lines_dropped_total', 'hsmgw_sign_threads',
    ]) assert.ok(names.has(needed), `the dashboard does not show ${needed}`);
    assert.match(exprs, /sum by \(key, code\) \(rate\(hsmgw_sign_requests_total/, 'throughput is not split by key and status');
    assert.match(exprs, /sum by \(ckr\)/, 'HSM errors are not split by CKR');
  });
});

describe('PromQL metric names', () => {
  it('the name extractor finds exactly the metric names of known expressions', () => {
    assert.deepEqual(promqlMetricNames('sum by (key, code) (rate(hsmgw_sign_requests_total{job=~"$job", code="OK"}[$__rate_interval]))'), ['hsmgw_sign_requests_total']);
    assert.deepEqual(promqlMetricNames('histogram_quantile(0.99, sum by (le) (rate(a_bucket{x="y"}[5m]))) > 0.05 and on (job) b_count offset 5m'), ['a_bucket', 'b_count']);
    assert.deepEqual(promqlMetricNames('hsmgw_tls_certificate_expiry_timestamp_seconds - time() < 14 * 86400'), ['hsmgw_tls_certificate_expiry_timestamp_seconds']);
    assert.deepEqual(promqlMetricNames('(sum by (job) (rate(x_total{code="OK"}[15m])) or sum by (job) (up) * 0) == 0'), ['up', 'x_total']);
    const families = new Map([['h', 'histogram'], ['c_total', 'counter']]);
    assert.equal(metricFamily('h_bucket', families), 'h');
    assert.equal(metricFamily('c_total_bucket', families), undefined);
  });

  describe('against a live gateway /metrics', () => {
    let gw: TestGateway;
    let families: Map<string, string>;
    before(async () => {
      gw = await startTestGateway();
      // One signature so labelled series exist too (the names come from # TYPE lines either way).
      await gw.client().sign('dev-ec', 'ECDSA_SHA256', crypto.createHash('sha256').update('deploy').digest());
      families = await scrapeFamilies(gw.metricsUrl);
    });
    after(async () => { await gw?.stop(); });

    it('every dashboard expression uses only metric names the gateway exports', () => {
      const unknown = unknownMetricNames(dashboardExpressions(readDashboard()).map((e) => e.expr), families);
      assert.deepEqual(unknown, [], `unknown metric names: ${unknown.map(([e, n]) => `${n} in ${e}`).join('\n')}`);
    });

    it('every alert expression uses only metric names the gateway exports (and up)', () => {
      // hsmgw_rate_limited_total (HsmGatewayRateLimited) is checked like the rest: it is exported.
      const unknown = unknownMetricNames(readAlertRules().map((r) => r.expr), families, new Set(['up']));
      assert.deepEqual(unknown, [], `unknown metric names: ${unknown.map(([e, n]) => `${n} in ${e}`).join('\n')}`);
    });

    it('the check fails on a name the gateway does not export', () => {
      const unknown = unknownMetricNames(['rate(hsmgw_sign_requests_totl[5m])', 'hsmgw_pool_sessions_busy'], families);
      assert.deepEqual(unknown.map(([, n]) => n), ['hsmgw_sign_requests_totl', 'hsmgw_pool_sessions_busy']);
    });
  });
});
