/** Reading deploy/grafana/hsm-gateway.json and deploy/prometheus/alerts.yml for the tests. */
import * as fs from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { deployPath } from './deploy-files';

export interface Target { refId: string; expr: string; datasource?: { type?: string; uid?: string } }
export interface Panel { id: number; type: string; title: string; targets?: Target[]; panels?: Panel[]; datasource?: { type?: string; uid?: string }; gridPos?: { h: number; w: number; x: number; y: number } }
export interface Dashboard { uid: string; title: string; panels: Panel[]; templating: { list: Array<{ name: string; type: string; query?: unknown; definition?: string }> } }

export const DASHBOARD_FILE = deployPath('grafana', 'hsm-gateway.json');

export function readDashboard(): Dashboard {
  return JSON.parse(fs.readFileSync(DASHBOARD_FILE, 'utf8')) as Dashboard;
}

export function allPanels(d: Dashboard): Panel[] {
  return d.panels.flatMap((p) => [p, ...(p.panels ?? [])]);
}

/** Every PromQL expression of the dashboard: panel targets and query variables. */
export function dashboardExpressions(d: Dashboard): Array<{ where: string; expr: string }> {
  const out: Array<{ where: string; expr: string }> = [];
  for (const p of allPanels(d)) for (const t of p.targets ?? []) out.push({ where: `panel "${p.title}" ${t.refId}`, expr: t.expr });
  for (const v of d.templating.list) {
    if (v.type !== 'query') continue;
    const q = typeof v.query === 'string' ? v.query : (v.query as { query?: string } | undefined)?.query ?? '';
    // label_values(selector, label): the selector is PromQL.
    const m = /^label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\)$/.exec(q.trim());
    out.push({ where: `variable $${v.name}`, expr: m ? m[1] : q });
  }
  return out;
}

/** Grafana variables replaced by values Prometheus accepts, to evaluate an expression. */
export function substituteGrafanaVariables(expr: string): string {
  return expr
    .replace(/\$__rate_interval|\$__interval|\$__range/g, '1m')
    .replace(/\$\{?(job|instance)\}?/g, '.*');
}

export interface AlertRule { alert: string; expr: string; for?: string; labels?: Record<string, string>; annotations?: Record<string, string> }

export function readAlertRules(): AlertRule[] {
  const doc = parseYaml(fs.readFileSync(deployPath('prometheus', 'alerts.yml'), 'utf8')) as { groups: Array<{ rules: Array<Partial<AlertRule>> }> };
  return doc.groups.flatMap((g) => g.rules).filter((r): r is AlertRule => typeof r.alert === 'string');
}
