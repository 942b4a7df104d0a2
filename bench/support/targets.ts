/** A target from issue 4's Targets section and whether this run met it. */
export interface Target {
  name: string;
  /** undefined: not measured in this run (e.g. pending). */
  met: boolean | undefined;
  value: string;
}

export function targetLines(targets: Target[]): string {
  return targets.map((t) => `- ${t.met === undefined ? 'PENDING' : t.met ? 'MET    ' : 'MISSED '} ${t.name}: ${t.value}`).join('\n');
}
