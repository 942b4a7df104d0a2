/**
 * TypeScript face of the fault-injecting PKCS#11 module (faulty_pkcs11.c, same folder).
 *
 *   const so = buildFaultyModule();               // gcc, cached by content hash
 *   const faults = new FaultController();         // private temp dir with control + trace files
 *   Object.assign(process.env, faults.env());     // BEFORE the module is loaded (or spawn a child)
 *   pkcs11.load(so); pkcs11.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
 *   faults.fail('C_Sign', 'CKR_DEVICE_ERROR', { once: true });
 *
 * The control-file format is documented at the top of faulty_pkcs11.c.
 */
import { execFileSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export const DEFAULT_TARGET = '/usr/lib/softhsm/libsofthsm2.so';
const SOURCE_NAME = 'faulty_pkcs11.c';
const GCC_FLAGS = [
  '-std=c99', '-Wall', '-Wextra', '-O2', '-g', '-fPIC', '-shared', '-pthread',
  '-Wl,-Bsymbolic', '-Wl,--no-undefined',
];

/** Finds test/faulty-pkcs11/faulty_pkcs11.c from the .ts file or its compiled copy in dist/. */
export function faultySourcePath(): string {
  let dir = __dirname;
  for (;;) {
    for (const candidate of [path.join(dir, SOURCE_NAME), path.join(dir, 'test', 'faulty-pkcs11', SOURCE_NAME)]) {
      if (fs.existsSync(candidate)) return candidate;
    }
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error(`${SOURCE_NAME} not found above ${__dirname}`);
    dir = parent;
  }
}

/** Directory holding the OASIS pkcs11.h shipped with pkcs11js. */
export function pkcs11IncludeDir(): string {
  const dir = path.join(path.dirname(require.resolve('pkcs11js/package.json')), 'includes', 'pkcs11');
  if (!fs.existsSync(path.join(dir, 'pkcs11.h'))) throw new Error(`pkcs11.h not found in ${dir}`);
  return dir;
}

export interface BuildOptions {
  /** Where the .so goes; default env FAULTY_PKCS11_BUILD_DIR or <tmpdir>/hsm-gateway-faulty-pkcs11-<uid>. */
  buildDir?: string;
  /** C compiler; default env CC or gcc. */
  cc?: string;
}

/**
 * Compiles faulty_pkcs11.c (only when no library for the same source, headers and flags exists
 * yet: the file name carries a hash of them) and returns the path of the shared library.
 * Safe to call from concurrent test processes: the output is written under a temporary name and
 * renamed into place.
 */
export function buildFaultyModule(opts: BuildOptions = {}): string {
  const source = faultySourcePath();
  const include = pkcs11IncludeDir();
  const cc = opts.cc ?? process.env.CC ?? 'gcc';
  const uid = typeof process.getuid === 'function' ? process.getuid() : 0;
  const buildDir = opts.buildDir ?? process.env.FAULTY_PKCS11_BUILD_DIR ??
    path.join(os.tmpdir(), `hsm-gateway-faulty-pkcs11-${uid}`);
  const hash = crypto.createHash('sha256');
  hash.update(fs.readFileSync(source));
  for (const h of ['pkcs11.h', 'pkcs11t.h', 'pkcs11f.h']) {
    const file = path.join(include, h);
    if (fs.existsSync(file)) hash.update(fs.readFileSync(file));
  }
  hash.update(JSON.stringify([cc, GCC_FLAGS]));
  const out = path.join(buildDir, `libfaultypkcs11-${hash.digest('hex').slice(0, 16)}.so`);
  if (fs.existsSync(out)) return out;
  fs.mkdirSync(buildDir, { recursive: true });
  const tmp = `${out}.${process.pid}.${crypto.randomBytes(4).toString('hex')}.tmp`;
  try {
    execFileSync(cc, [...GCC_FLAGS, `-I${include}`, source, '-o', tmp, '-ldl'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    fs.renameSync(tmp, out);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    const e = err as { stderr?: Buffer; message: string };
    throw new Error(`building ${source} failed: ${e.stderr?.toString() || e.message}`);
  }
  return out;
}

/** CLOCK_MONOTONIC in ms, the clock of the trace file timestamps. */
export function monotonicNowMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

export interface FailOptions {
  /** Fail only the next matching call. */
  once?: boolean;
  /** Fail the next N matching calls. */
  times?: number;
  /** Fail each matching call with this probability (0..1). */
  prob?: number;
  /** Let this many matching calls through before the rule starts firing. */
  after?: number;
}

export interface TraceEntry {
  /** CLOCK_MONOTONIC ms (compare with monotonicNowMs()). */
  t: number;
  /** PKCS#11 function name, e.g. 'C_Login'. */
  fn: string;
  /** Return value as CKR name ('CKR_OK') or '0x%08X' for unknown codes. */
  rv: string;
  /** True when the result was injected (fail rule or device removal) rather than forwarded. */
  injected: boolean;
}

export interface FaultControllerOptions {
  /** Directory for the control and trace files; default: a fresh temp dir. */
  dir?: string;
  /** Real module to forward to; default env FAULTY_PKCS11_TARGET or SoftHSM2. */
  target?: string;
}

/** `*` or a PKCS#11 function name such as 'C_Sign'. */
export type FunctionPattern = string;

const FN_RE = /^(\*|C_[A-Za-z]+)$/;

function checkFn(fn: FunctionPattern): string {
  if (!FN_RE.test(fn)) throw new Error(`bad function pattern: ${fn}`);
  return fn;
}

/**
 * Writes the control file read by the faulty module. Every change rewrites the whole file
 * atomically (temp file + rename); every write carries a new generation comment, so the module
 * re-parses it and all per-rule counters (once / times / after) start over. Use batch() to make
 * several changes in one write.
 */
export class FaultController {
  readonly dir: string;
  readonly controlPath: string;
  readonly logPath: string;
  readonly target: string;
  private lines: string[] = [];
  private generation = 0;
  private batchDepth = 0;
  private readonly ownsDir: boolean;

  constructor(opts: FaultControllerOptions = {}) {
    this.ownsDir = opts.dir === undefined;
    this.dir = opts.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'faulty-pkcs11-'));
    fs.mkdirSync(this.dir, { recursive: true });
    this.controlPath = path.join(this.dir, 'control');
    this.logPath = path.join(this.dir, 'trace.log');
    this.target = opts.target ?? process.env.FAULTY_PKCS11_TARGET ?? DEFAULT_TARGET;
    this.write();
  }

  /** Environment for a process that loads the module (set before the module is loaded). */
  env(): Record<string, string> {
    return {
      FAULTY_PKCS11_TARGET: this.target,
      FAULTY_PKCS11_CONTROL: this.controlPath,
      FAULTY_PKCS11_LOG: this.logPath,
    };
  }

  /** Current rule lines (without the generation comment). */
  rules(): readonly string[] {
    return [...this.lines];
  }

  /** Replaces all rules with raw control-file lines. */
  setRules(lines: readonly string[]): this {
    this.lines = [...lines];
    return this.write();
  }

  /** Appends a raw control-file line. */
  add(line: string): this {
    this.lines.push(line);
    return this.write();
  }

  /** Runs fn and writes the control file once at the end (also when fn throws). */
  batch(fn: (c: this) => void): this {
    this.batchDepth++;
    try {
      fn(this);
    } finally {
      this.batchDepth--;
      this.write();
    }
    return this;
  }

  /** `fail <fn> <ckr> [once|times N|prob P] [after N]`; ckr is a CKR name or a number. */
  fail(fn: FunctionPattern, ckr: string | number, opts: FailOptions = {}): this {
    const code = typeof ckr === 'number' ? `0x${ckr.toString(16)}` : ckr;
    if (!/^(CKR_[A-Z0-9_]+|0x[0-9a-fA-F]+|\d+)$/.test(code)) throw new Error(`bad CKR: ${ckr}`);
    const parts = ['fail', checkFn(fn), code];
    const modes = [opts.once, opts.times !== undefined, opts.prob !== undefined].filter(Boolean).length;
    if (modes > 1) throw new Error('once, times and prob are exclusive');
    if (opts.once) parts.push('once');
    if (opts.times !== undefined) {
      if (!Number.isInteger(opts.times) || opts.times < 0) throw new Error(`bad times: ${opts.times}`);
      parts.push('times', String(opts.times));
    }
    if (opts.prob !== undefined) {
      if (!(opts.prob >= 0 && opts.prob <= 1)) throw new Error(`bad prob: ${opts.prob}`);
      parts.push('prob', String(opts.prob));
    }
    if (opts.after !== undefined) {
      if (!Number.isInteger(opts.after) || opts.after < 0) throw new Error(`bad after: ${opts.after}`);
      parts.push('after', String(opts.after));
    }
    return this.add(parts.join(' '));
  }

  /** `delay <fn> <ms>`: latency before forwarding. */
  delay(fn: FunctionPattern, ms: number): this {
    if (!(ms >= 0)) throw new Error(`bad delay: ${ms}`);
    return this.add(`delay ${checkFn(fn)} ${ms}`);
  }

  /** `hang <fn>`: matching calls block until release(). */
  hang(fn: FunctionPattern): this {
    return this.add(`hang ${checkFn(fn)}`);
  }

  /** Removes hang rules (all, or those for fn); blocked calls then proceed within ~10 ms. */
  release(fn?: FunctionPattern): this {
    return this.removeWhere((l) => l.startsWith('hang ') && (fn === undefined || l === `hang ${fn}`));
  }

  /** After C_Finalize, session handles start from the same number again (as SoftHSM's do). */
  reuseSessionHandles(): this {
    return this.add('sessions reuse-handles');
  }

  /** `device removed`: every call fails with CKR_DEVICE_REMOVED and the target's sessions close. */
  removeDevice(): this {
    if (this.lines.includes('device removed')) return this;
    return this.add('device removed');
  }

  /** The device comes back; sessions from before stay invalid, a fresh login is needed. */
  restoreDevice(): this {
    return this.removeWhere((l) => l === 'device removed');
  }

  /** `trace <fn>`: one line per call in the trace log. */
  trace(fn: FunctionPattern = '*'): this {
    return this.add(`trace ${checkFn(fn)}`);
  }

  /** `seed <n>`: makes `prob` rules deterministic. */
  seed(n: number): this {
    if (!Number.isInteger(n) || n < 0) throw new Error(`bad seed: ${n}`);
    return this.add(`seed ${n}`);
  }

  /** Removes every rule (faults, device removal, traces). */
  clear(): this {
    this.lines = [];
    return this.write();
  }

  /** Removes faults and device removal but keeps trace rules. */
  clearFaults(): this {
    return this.removeWhere((l) => !l.startsWith('trace '));
  }

  /** Parsed trace log (empty if nothing was traced yet). */
  readTrace(): TraceEntry[] {
    let text: string;
    try {
      text = fs.readFileSync(this.logPath, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    const entries: TraceEntry[] = [];
    for (const line of text.split('\n')) {
      const parts = line.trim().split(/\s+/);
      if (parts.length < 3) continue;
      entries.push({ t: Number(parts[0]), fn: parts[1], rv: parts[2], injected: parts[3] === 'injected' });
    }
    return entries;
  }

  /** Empties the trace log. */
  clearTrace(): void {
    fs.writeFileSync(this.logPath, '');
  }

  /** Deletes the temp dir (if this controller created it). */
  dispose(): void {
    if (this.ownsDir) fs.rmSync(this.dir, { recursive: true, force: true });
  }

  private removeWhere(pred: (line: string) => boolean): this {
    this.lines = this.lines.filter((l) => !pred(l));
    return this.write();
  }

  private write(): this {
    if (this.batchDepth > 0) return this;
    this.generation++;
    const body = [`# generation ${this.generation} (written by FaultController)`, ...this.lines, ''].join('\n');
    const tmp = `${this.controlPath}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, body);
    fs.renameSync(tmp, this.controlPath);
    return this;
  }
}
