import { ConfigError } from './config-error';

/** Reads typed fields out of parsed YAML, naming the full field path in every error. */
export class FieldReader {
  constructor(private readonly value: unknown, readonly path: string) {}

  static root(value: unknown): FieldReader {
    if (value === null || value === undefined) return new FieldReader({}, '');
    if (typeof value !== 'object' || Array.isArray(value)) throw new ConfigError('(top level)', 'must be a mapping');
    return new FieldReader(value, '');
  }

  private fieldPath(name: string): string {
    return this.path ? `${this.path}.${name}` : name;
  }

  private raw(name: string): unknown {
    return (this.value as Record<string, unknown>)[name];
  }

  /** Rejects keys this reader does not know: catches typos such as `sesions:`. */
  rejectUnknown(known: readonly string[]): void {
    for (const key of Object.keys(this.value as object)) {
      if (!known.includes(key)) throw new ConfigError(this.fieldPath(key), `unknown field (expected one of: ${known.join(', ')})`);
    }
  }

  has(name: string): boolean {
    return this.raw(name) !== undefined && this.raw(name) !== null;
  }

  object(name: string): FieldReader {
    const v = this.raw(name);
    if (v === undefined || v === null) return new FieldReader({}, this.fieldPath(name));
    if (typeof v !== 'object' || Array.isArray(v)) throw new ConfigError(this.fieldPath(name), 'must be a mapping');
    return new FieldReader(v, this.fieldPath(name));
  }

  list(name: string): FieldReader[] {
    const v = this.raw(name);
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v)) throw new ConfigError(this.fieldPath(name), 'must be a list');
    return v.map((item: unknown, i: number) => {
      const p = `${this.fieldPath(name)}[${i}]`;
      if (item === null || typeof item !== 'object' || Array.isArray(item)) throw new ConfigError(p, 'must be a mapping');
      return new FieldReader(item, p);
    });
  }

  optionalString(name: string): string | undefined {
    const v = this.raw(name);
    if (v === undefined || v === null) return undefined;
    if (typeof v === 'number') return String(v);
    if (typeof v !== 'string' || v.length === 0) throw new ConfigError(this.fieldPath(name), 'must be a non-empty string');
    return v;
  }

  string(name: string, fallback?: string): string {
    const v = this.optionalString(name) ?? fallback;
    if (v === undefined) throw new ConfigError(this.fieldPath(name), 'is required');
    return v;
  }

  stringList(name: string, fallback: string[] = []): string[] {
    const v = this.raw(name);
    if (v === undefined || v === null) return fallback;
    if (!Array.isArray(v) || v.some((s) => typeof s !== 'string' || s.length === 0)) {
      throw new ConfigError(this.fieldPath(name), 'must be a list of non-empty strings');
    }
    return v as string[];
  }

  stringMap(name: string): Record<string, string> {
    const v = this.raw(name);
    if (v === undefined || v === null) return {};
    if (typeof v !== 'object' || Array.isArray(v)) throw new ConfigError(this.fieldPath(name), 'must be a mapping of names to strings');
    const out: Record<string, string> = {};
    for (const [k, val] of Object.entries(v as Record<string, unknown>)) {
      if (typeof val !== 'string' && typeof val !== 'number') throw new ConfigError(`${this.fieldPath(name)}.${k}`, 'must be a string');
      out[k] = String(val);
    }
    return out;
  }

  integer(name: string, fallback: number, min: number, max = Number.MAX_SAFE_INTEGER): number {
    const v = this.raw(name);
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
      const range = max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `between ${min} and ${max}`;
      throw new ConfigError(this.fieldPath(name), `must be an integer ${range} (got ${JSON.stringify(v)})`);
    }
    return v;
  }

  boolean(name: string, fallback: boolean): boolean {
    const v = this.raw(name);
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'boolean') throw new ConfigError(this.fieldPath(name), `must be true or false (got ${JSON.stringify(v)})`);
    return v;
  }

  oneOf<T extends string>(name: string, allowed: readonly T[], fallback: T): T {
    const v = this.optionalString(name) ?? fallback;
    if (!(allowed as readonly string[]).includes(v)) {
      throw new ConfigError(this.fieldPath(name), `must be one of ${allowed.join(', ')} (got ${JSON.stringify(v)})`);
    }
    return v as T;
  }
}
