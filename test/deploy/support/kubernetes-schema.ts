/**
 * Validates Kubernetes objects against the API schemas shipped in the npm package
 * kubernetes-models (and @kubernetes-models/prometheus-operator for ServiceMonitor).
 *
 * Those validators check types, required fields and formats, but accept unknown fields (a
 * typo like `readinessprobe` would pass). So the object is validated through a Proxy that
 * records every property the validator looks at: a property it never reads is not in the
 * schema. Maps (labels, annotations, data) are read by enumeration, which counts as looking.
 */
interface ModelClass { new (data: object): { validate(): void }; apiVersion: string; kind: string }

const MODULES: Record<string, string> = {
  v1: 'kubernetes-models/v1',
  'apps/v1': 'kubernetes-models/apps/v1',
  'policy/v1': 'kubernetes-models/policy/v1',
  'autoscaling/v2': 'kubernetes-models/autoscaling/v2',
  'networking.k8s.io/v1': 'kubernetes-models/networking.k8s.io/v1',
  'monitoring.coreos.com/v1': '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1',
};

export function modelFor(apiVersion: string, kind: string): ModelClass {
  const module = MODULES[apiVersion];
  if (!module) throw new Error(`no schema module for apiVersion ${apiVersion}`);
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const exported = (require(module) as Record<string, ModelClass | undefined>)[kind];
  if (!exported || exported.apiVersion !== apiVersion || exported.kind !== kind) throw new Error(`no schema for ${apiVersion} ${kind}`);
  return exported;
}

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/** Paths (a/b/0/c) of every property in `value`. */
function allPaths(value: Json, prefix: string, out: string[]): string[] {
  if (value !== null && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      const p = `${prefix}/${k}`;
      out.push(p);
      allPaths(v, p, out);
    }
  }
  return out;
}

function tracked(value: Json, prefix: string, seen: Set<string>): Json {
  if (value === null || typeof value !== 'object') return value;
  return new Proxy(value as object, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver) as Json;
      if (typeof prop !== 'string' || !Object.prototype.hasOwnProperty.call(target, prop)) return v;
      seen.add(`${prefix}/${prop}`);
      return tracked(v, `${prefix}/${prop}`, seen);
    },
    ownKeys(target) {
      const keys = Reflect.ownKeys(target);
      for (const k of keys) if (typeof k === 'string') seen.add(`${prefix}/${k}`);
      return keys;
    },
  }) as Json;
}

/**
 * Problems with one object: schema errors, then unknown fields. Empty when valid.
 */
export function validateKubernetesObject(obj: Record<string, unknown>): string[] {
  const apiVersion = String(obj.apiVersion);
  const kind = String(obj.kind);
  const where = `${kind} ${(obj.metadata as { name?: string } | undefined)?.name ?? '?'}`;
  let Model: ModelClass;
  try {
    Model = modelFor(apiVersion, kind);
  } catch (err) {
    return [`${where}: ${(err as Error).message}`];
  }
  const problems: string[] = [];
  try {
    new Model(obj).validate();
  } catch (err) {
    problems.push(`${where}: ${(err as Error).message}`);
  }
  // The same validator over a recording proxy, to find what it never reads.
  const validate = (Model.prototype as unknown as { validate(this: unknown): void }).validate;
  const seen = new Set<string>();
  try {
    validate.call(tracked(obj as Json, '', seen));
  } catch {
    // errors were reported above
  }
  const unknown: string[] = [];
  for (const p of allPaths(obj as Json, '', [])) {
    if (!seen.has(p) && !unknown.some((u) => p.startsWith(`${u}/`))) unknown.push(p);
  }
  for (const p of unknown) problems.push(`${where}: unknown field ${p}`);
  return problems;
}
