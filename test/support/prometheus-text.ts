/**
 * A parser for the Prometheus text exposition format (version 0.0.4), strict enough that a
 * malformed line fails the test: `# HELP`, `# TYPE`, and `name{label="value",...} number`.
 */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface ParsedMetrics {
  samples: Sample[];
  types: Map<string, string>;
  help: Map<string, string>;
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;

function parseLabels(text: string, line: string): { labels: Record<string, string>; rest: string } {
  const labels: Record<string, string> = {};
  let i = 1;
  while (text[i] !== '}') {
    const m = /^([a-zA-Z_][a-zA-Z0-9_]*)="/.exec(text.slice(i));
    if (!m) throw new Error(`bad label in: ${line}`);
    i += m[0].length;
    let value = '';
    while (text[i] !== '"') {
      if (i >= text.length) throw new Error(`unterminated label value in: ${line}`);
      if (text[i] === '\\') {
        const c = text[i + 1];
        value += c === 'n' ? '\n' : c;
        i += 2;
      } else {
        value += text[i++];
      }
    }
    labels[m[1]] = value;
    i++;
    if (text[i] === ',') i++;
  }
  return { labels, rest: text.slice(i + 1) };
}

function parseValue(text: string, line: string): number {
  const t = text.trim().split(/\s+/)[0];
  // Prometheus parses these case-insensitively (prom-client writes "Nan").
  if (/^\+?inf$/i.test(t)) return Infinity;
  if (/^-inf$/i.test(t)) return -Infinity;
  if (/^nan$/i.test(t)) return NaN;
  const v = Number(t);
  if (t === '' || Number.isNaN(v)) throw new Error(`bad sample value in: ${line}`);
  return v;
}

export function parsePrometheusText(text: string): ParsedMetrics {
  const out: ParsedMetrics = { samples: [], types: new Map(), help: new Map() };
  for (const line of text.split('\n')) {
    if (line === '') continue;
    if (line.startsWith('# HELP ')) {
      const [name, ...help] = line.slice(7).split(' ');
      out.help.set(name, help.join(' '));
      continue;
    }
    if (line.startsWith('# TYPE ')) {
      const [name, type] = line.slice(7).split(' ');
      if (!['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(type)) throw new Error(`bad TYPE line: ${line}`);
      out.types.set(name, type);
      continue;
    }
    if (line.startsWith('#')) continue;
    const m = NAME.exec(line);
    if (!m) throw new Error(`bad sample line: ${line}`);
    let rest = line.slice(m[0].length);
    let labels: Record<string, string> = {};
    if (rest.startsWith('{')) ({ labels, rest } = parseLabels(rest, line));
    out.samples.push({ name: m[0], labels, value: parseValue(rest, line) });
  }
  return out;
}

/** The value of the one sample matching name and labels (0 when absent). */
export function sampleValue(metrics: ParsedMetrics, name: string, labels: Record<string, string> = {}): number {
  const matches = metrics.samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  return matches.reduce((sum, s) => sum + s.value, 0);
}
