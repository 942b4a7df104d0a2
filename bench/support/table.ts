/** Plain-text tables for the terminal and for BENCHMARKS.md (GitHub-flavoured Markdown). */

export function markdownTable(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string => `| ${cells.map((c, i) => c.padEnd(widths[i])).join(' | ')} |`;
  return [line(header), `| ${widths.map((w) => '-'.repeat(w)).join(' | ')} |`, ...rows.map(line)].join('\n');
}

/** "median (min-max)" with a unit-less number format. */
export function fmtSpread(s: { median: number; min: number; max: number }, digits = 0, scale = 1): string {
  if (!Number.isFinite(s.median)) return '-';
  const f = (v: number): string => (v / scale).toFixed(digits);
  return s.min === s.max ? f(s.median) : `${f(s.median)} (${f(s.min)}-${f(s.max)})`;
}

export function fmt(v: number | undefined, digits = 0): string {
  return v === undefined || !Number.isFinite(v) ? '-' : v.toFixed(digits);
}
