/** The rule syntax for names: an exact name, or a prefix followed by a trailing `*`. */
export function namePatternMatches(pattern: string, value: string): boolean {
  return pattern.endsWith('*') ? value.startsWith(pattern.slice(0, -1)) : pattern === value;
}
