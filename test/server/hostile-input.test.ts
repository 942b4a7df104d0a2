/**
 * Hostile input: a seeded fuzz of SignRequests, unary and SignStream, each answer checked
 * against an exact oracle, with valid requests interleaved whose signatures must verify.
 *
 * Reproduce a failure: HSMGW_FUZZ_SEED=<seed printed by the failing run> node --test dist/test/server/hostile-input.test.js
 *
 * The oracle (README "Status codes", evaluated in the gateway's order):
 *   encoded message > limits.maxReceiveMessageBytes           → RESOURCE_EXHAUSTED (grpc-js; on a stream it ends the stream)
 *   bytes that are not a SignRequest (protobuf decode fails)  → INVALID_ARGUMENT
 *   key name empty or not [A-Za-z0-9][A-Za-z0-9._-]{0,127}   → INVALID_ARGUMENT (whoever asks)
 *   no rule matches identity × key name                        → PERMISSION_DENIED (existing or not)
 *   a rule matches (wildcard) but no such key is configured    → NOT_FOUND
 *   algorithm 0, unknown, or not fitting the key's type        → INVALID_ARGUMENT
 *   algorithm outside the algorithms the matching rules list   → PERMISSION_DENIED
 *   no input; digest length ≠ the hash's; message > the cap    → INVALID_ARGUMENT
 *   otherwise                                                  → OK, and the signature verifies with the key's SPKI
 * Requests built from fields are judged from those fields; random and mutated bytes are judged
 * from what the generated proto3 decoder makes of them (the wire contract).
 */
import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { createHash, randomInt } from 'node:crypto';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { KeyType, SignatureAlgorithm, SignRequest, SignResponse } from '../../proto/generated/hsmgateway/v1/signer';
import { Logger } from '../../server/observability/logger';
import { ALL_TEST_KEYS, startTestGateway, type TestGateway } from '../support/test-gateway';
import { IDENTITIES } from '../support/test-environment';
import { parsePrometheusText } from '../support/prometheus-text';
import { hashFor, verifySignature } from '../support/signatures';
import { Prng } from '../support/prng';

const SEED = process.env.HSMGW_FUZZ_SEED !== undefined ? Number(process.env.HSMGW_FUZZ_SEED) : randomInt(2 ** 31);
const MAX_MESSAGE = 1024;
const MAX_RECEIVE = 4096;
const UNARY_COUNT = 3000;
const STREAM_COUNT = 1200;
const SIGN = '/hsmgateway.v1.Signer/Sign';
const SIGN_STREAM = '/hsmgateway.v1.Signer/SignStream';


type IdentityName = 'dev' | 'pssOnly' | 'wildcard' | 'dnsOnly' | 'nobody';
const IDENTITY_NAMES: readonly IdentityName[] = ['dev', 'pssOnly', 'wildcard', 'dnsOnly', 'nobody'];

/** The rules the gateway runs with, and the oracle's reading of them. */
const RULES: ReadonlyArray<{ identity: string; keys: string[]; algorithms?: string[] }> = [
  { identity: IDENTITIES.dev, keys: ALL_TEST_KEYS },
  { identity: IDENTITIES.pssOnly, keys: ['dev-rsa'], algorithms: ['RSA_PSS_SHA256'] },
  { identity: 'spiffe://hsm-gateway.test/wild/*', keys: ['test-*'] },
  { identity: IDENTITIES.dnsOnly, keys: ['dev-rsa'] },
];

const matches = (pattern: string, value: string): boolean => (pattern.endsWith('*') ? value.startsWith(pattern.slice(0, -1)) : pattern === value);
const KEY_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const RSA_ALGS = [1, 2, 3, 4, 5, 6];
const EC_ALGS = [7, 8, 9];
const DIGEST_LENGTH: Record<number, number> = { 1: 32, 2: 48, 3: 64, 4: 32, 5: 48, 6: 64, 7: 32, 8: 48, 9: 64 };

interface KeyFacts { type: KeyType; spki: Buffer }

type Code = grpc.status;

/** The exact status the gateway must answer for identity × decoded request. */
function expectedCode(identity: IdentityName, req: SignRequest, keys: Map<string, KeyFacts>): Code {
  if (!KEY_NAME.test(req.key)) return grpc.status.INVALID_ARGUMENT;
  const id = identity === 'wildcard' ? IDENTITIES.wildcard : IDENTITIES[identity];
  const rules = RULES.filter((r) => matches(r.identity, id) && r.keys.some((k) => matches(k, req.key)));
  if (rules.length === 0) return grpc.status.PERMISSION_DENIED;
  const key = keys.get(req.key);
  if (!key) return grpc.status.NOT_FOUND;
  const fits = key.type === KeyType.KEY_TYPE_RSA ? RSA_ALGS : EC_ALGS;
  if (!fits.includes(req.algorithm)) return grpc.status.INVALID_ARGUMENT;
  const anyAlgorithm = rules.some((r) => !r.algorithms);
  if (!anyAlgorithm && !rules.some((r) => r.algorithms?.includes(SignatureAlgorithm[req.algorithm]))) return grpc.status.PERMISSION_DENIED;
  if (!req.input) return grpc.status.INVALID_ARGUMENT;
  if (req.input.$case === 'digest' && req.input.value.length !== DIGEST_LENGTH[req.algorithm]) return grpc.status.INVALID_ARGUMENT;
  if (req.input.$case === 'message' && req.input.value.length > MAX_MESSAGE) return grpc.status.INVALID_ARGUMENT;
  return grpc.status.OK;
}

/** One fuzz case: the bytes sent, who sends them, the expected code, what a success must verify against. */
interface FuzzCase {
  kind: 'valid' | 'structured' | 'mutated' | 'random';
  identity: IdentityName;
  bytes: Buffer;
  expected: Code;
  /** Decoded request (undefined when the bytes do not decode). */
  req?: SignRequest;
  /** The message whose hash was signed, when known. */
  preimage?: Buffer;
}

const HOSTILE_KEYS: readonly string[] = [
  '', '.', '..', '../dev-ec', '/etc/passwd', 'dev-ec/../../x', './dev-ec', 'dev-ec/', '\\dev-ec',
  'pkcs11:object=dev-ec;type=private', 'pkcs11:id=%01?pin-value=1234', 'file:///etc/passwd', 'http://x/dev-ec',
  'dev-ec\u0000', '\u0000', 'dev-ec\u0000evil', 'dev-ec%00', 'dev-ec\n', ' dev-ec', 'dev-ec ', '.hidden', '-dev-ec',
  'dév-ec', 'dev-ec\u202e', '\u{1F511}', '*', 'test-*', 'dev-*', 'DEV-EC', 'dev_ec', 'test-missing', 'test-ec384.', 'nope',
  'a'.repeat(128), 'a'.repeat(129), `test-${'x'.repeat(123)}`, `test-${'x'.repeat(124)}`, 'x'.repeat(2000), 'k'.repeat(5000),
];
const ALGORITHMS: readonly number[] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 99, 1000, 2 ** 31 - 1, -1, -(2 ** 31)];
// 256 and 384: a whole RSA-2048/3072 block, what a raw-RSA (decryption) oracle would take.
const DIGEST_LENGTHS: readonly number[] = [0, 1, 20, 31, 32, 33, 47, 48, 49, 63, 64, 65, 128, 256, 384, 1000, 4200];
const MESSAGE_LENGTHS: readonly number[] = [0, 1, 100, MAX_MESSAGE - 1, MAX_MESSAGE, MAX_MESSAGE + 1, 2000, 4100];

function hashLengthFor(length: number): 'sha256' | 'sha384' | 'sha512' | undefined {
  return length === 32 ? 'sha256' : length === 48 ? 'sha384' : length === 64 ? 'sha512' : undefined;
}

class CaseGenerator {
  private nextId = 1n;
  constructor(private readonly rng: Prng, private readonly keys: Map<string, KeyFacts>) {}

  private id(): bigint {
    // Unique per case (low bits), with random high bits to exercise the full uint64 range.
    return (BigInt(this.rng.int(2 ** 20)) << 40n) | this.nextId++;
  }

  /** A request every rule lets through: the identity may use the key with this algorithm. */
  valid(): FuzzCase {
    const identity = this.rng.pick<IdentityName>(['dev', 'dev', 'dev', 'pssOnly', 'wildcard', 'dnsOnly']);
    const key = identity === 'pssOnly' ? 'dev-rsa' : identity === 'wildcard' ? this.rng.pick(['test-ec384', 'test-rsa3072']) : identity === 'dnsOnly' ? 'dev-rsa' : this.rng.pick(ALL_TEST_KEYS);
    const facts = this.keys.get(key) as KeyFacts;
    const algorithm = identity === 'pssOnly' ? SignatureAlgorithm.RSA_PSS_SHA256 : this.rng.pick(facts.type === KeyType.KEY_TYPE_RSA ? RSA_ALGS : EC_ALGS);
    const preimage = this.rng.bytes(this.rng.int(200));
    const input = this.rng.next() < 0.5
      ? { $case: 'digest' as const, value: createHash(hashFor(algorithm)).update(preimage).digest() }
      : { $case: 'message' as const, value: preimage };
    const req: SignRequest = { key, algorithm, input, requestId: this.id() };
    return { kind: 'valid', identity, bytes: Buffer.from(SignRequest.encode(req).finish()), expected: grpc.status.OK, req, preimage };
  }

  /** Fields drawn from hostile pools: odd key names, unknown enums, wrong lengths, huge and empty inputs. */
  structured(): FuzzCase {
    const identity = this.rng.pick(IDENTITY_NAMES);
    const key = this.rng.next() < 0.5 ? this.rng.pick(HOSTILE_KEYS) : this.rng.pick(ALL_TEST_KEYS);
    const algorithm = this.rng.next() < 0.3 ? this.rng.pick(ALGORITHMS) : this.rng.pick([...RSA_ALGS, ...EC_ALGS]);
    let preimage: Buffer | undefined;
    let input: SignRequest['input'];
    const r = this.rng.next();
    if (r < 0.1) {
      input = undefined;
    } else if (r < 0.6) {
      const length = this.rng.next() < 0.5 ? DIGEST_LENGTH[algorithm] ?? 32 : this.rng.pick(DIGEST_LENGTHS);
      const hash = hashLengthFor(length);
      preimage = this.rng.bytes(16);
      input = { $case: 'digest', value: hash ? createHash(hash).update(preimage).digest() : this.rng.bytes(length) };
      if (!hash) preimage = undefined;
    } else {
      preimage = this.rng.bytes(this.rng.pick(MESSAGE_LENGTHS));
      input = { $case: 'message', value: preimage };
    }
    const req: SignRequest = { key, algorithm: algorithm as SignatureAlgorithm, input, requestId: this.id() };
    const bytes = Buffer.from(SignRequest.encode(req).finish());
    // Judged from the fields (not by decoding), except for the transport cap.
    return { kind: 'structured', identity, bytes, req, preimage, expected: bytes.length > MAX_RECEIVE ? grpc.status.RESOURCE_EXHAUSTED : expectedCode(identity, req, this.keys) };
  }

  /** A valid encoding with 1-3 byte-level mutations. */
  mutated(): FuzzCase {
    const base = this.rng.next() < 0.7 ? this.valid() : this.structured();
    let b = base.bytes;
    for (let n = 1 + this.rng.int(3); n > 0; n--) {
      const at = b.length === 0 ? 0 : this.rng.int(b.length);
      switch (this.rng.int(7)) {
        case 0: if (b.length) { b = Buffer.from(b); b[at] ^= 1 << this.rng.int(8); } break;
        case 1: if (b.length) { b = Buffer.from(b); b[at] = this.rng.int(256); } break;
        case 2: b = b.subarray(0, at); break;
        case 3: b = Buffer.concat([b.subarray(0, at), this.rng.bytes(1 + this.rng.int(8)), b.subarray(at)]); break;
        case 4: b = Buffer.concat([b.subarray(0, at), b.subarray(Math.min(b.length, at + 1 + this.rng.int(8)))]); break;
        case 5: b = Buffer.concat([b, b.subarray(at)]); break;
        default: b = Buffer.concat([b.subarray(0, at), Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f]), b.subarray(at)]); break;
      }
    }
    return this.fromBytes('mutated', base.identity, b, base.preimage);
  }

  random(): FuzzCase {
    const length = this.rng.next() < 0.02 ? MAX_RECEIVE + 1 + this.rng.int(100) : this.rng.int(300);
    return this.fromBytes('random', this.rng.pick(IDENTITY_NAMES), this.rng.bytes(length));
  }

  private fromBytes(kind: FuzzCase['kind'], identity: IdentityName, bytes: Buffer, preimage?: Buffer): FuzzCase {
    if (bytes.length > MAX_RECEIVE) return { kind, identity, bytes, expected: grpc.status.RESOURCE_EXHAUSTED };
    let req: SignRequest;
    try {
      req = SignRequest.decode(bytes);
    } catch {
      return { kind, identity, bytes, expected: grpc.status.INVALID_ARGUMENT };
    }
    return { kind, identity, bytes, req, preimage, expected: expectedCode(identity, req, this.keys) };
  }

  next(i: number): FuzzCase {
    if (i % 8 === 0) return this.valid();
    const r = this.rng.next();
    return r < 0.35 ? this.structured() : r < 0.75 ? this.mutated() : this.random();
  }
}

/**
 * Checks a signature over a digest whose message is unknown (mutated digests): openssl pkeyutl
 * verifies a prehashed input, which node:crypto cannot.
 */
async function verifyPrehashed(dir: string, spki: Buffer, algorithm: number, digest: Buffer, signature: Buffer, n: number): Promise<boolean> {
  const pub = path.join(dir, `pub-${n}.der`);
  const dig = path.join(dir, `digest-${n}`);
  const sig = path.join(dir, `sig-${n}`);
  fs.writeFileSync(pub, spki);
  fs.writeFileSync(dig, digest);
  fs.writeFileSync(sig, signature);
  const opts = RSA_ALGS.includes(algorithm)
    ? ['-pkeyopt', `digest:${hashFor(algorithm)}`, '-pkeyopt', `rsa_padding_mode:${algorithm >= 4 ? 'pss' : 'pkcs1'}`, ...(algorithm >= 4 ? ['-pkeyopt', 'rsa_pss_saltlen:digest'] : [])]
    : [];
  return new Promise((resolve) => {
    execFile('openssl', ['pkeyutl', '-verify', '-pubin', '-keyform', 'DER', '-inkey', pub, '-in', dig, '-sigfile', sig, ...opts], (err, stdout) => {
      resolve(!err && /Verified Successfully/.test(stdout));
    });
  });
}

interface Answer { code: Code; details: string; signature?: Buffer }

describe(`hostile input (seed ${SEED}; replay with HSMGW_FUZZ_SEED=${SEED})`, () => {
  let gw: TestGateway;
  const clients = new Map<IdentityName, grpc.Client>();
  const keys = new Map<string, KeyFacts>();
  let tmp: string;
  /** Answers per code that reached the sign pipeline (all but the transport's size refusals). */
  const pipelineCodes = new Map<string, number>();
  const tally = (code: Code): void => {
    const name = grpc.status[code];
    pipelineCodes.set(name, (pipelineCodes.get(name) ?? 0) + 1);
  };

  before(async () => {
    console.log(`# hostile-input fuzz seed ${SEED} (replay: HSMGW_FUZZ_SEED=${SEED})`);
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hostile-input-'));
    gw = await startTestGateway({ limits: { maxMessageBytes: MAX_MESSAGE, maxReceiveMessageBytes: MAX_RECEIVE }, authorization: { rules: RULES } });
    const ca = fs.readFileSync(gw.env.pki.ca);
    for (const name of IDENTITY_NAMES) {
      const id = gw.env.pki.clients[name];
      clients.set(name, new grpc.Client(gw.endpoint, grpc.credentials.createSsl(ca, fs.readFileSync(id.key), fs.readFileSync(id.cert))));
    }
    const dev = gw.client();
    for (const name of ALL_TEST_KEYS) {
      const info = await dev.getKey(name);
      keys.set(name, { type: info.type === 'RSA' ? KeyType.KEY_TYPE_RSA : KeyType.KEY_TYPE_EC, spki: info.publicKey });
    }
  });
  after(async () => {
    for (const c of clients.values()) c.close();
    await gw.stop();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  function unary(c: FuzzCase): Promise<Answer> {
    const client = clients.get(c.identity) as grpc.Client;
    return new Promise((resolve) => {
      client.makeUnaryRequest(SIGN, (b: Buffer) => b, (b: Buffer) => b, c.bytes, new grpc.Metadata(), { deadline: Date.now() + 10_000 }, (err, value) => {
        if (err) resolve({ code: err.code, details: err.details });
        else resolve({ code: grpc.status.OK, details: '', signature: Buffer.from(SignResponse.decode(value as Buffer).signature) });
      });
    });
  }

  let verified = 0;
  let prehashed = 0;
  /** Every success must verify: against the known message, or as a prehashed digest. */
  async function checkSignature(c: FuzzCase, signature: Buffer, where: string): Promise<void> {
    const req = c.req as SignRequest;
    assert.ok(await signatureVerifies(c, signature), `${where}: the signature for ${c.kind} ${req.key}/${SignatureAlgorithm[req.algorithm]} must verify (seed ${SEED})`);
    verified++;
  }

  async function signatureVerifies(c: FuzzCase, signature: Buffer): Promise<boolean> {
    const req = c.req as SignRequest;
    const facts = keys.get(req.key) as KeyFacts;
    const input = req.input as NonNullable<SignRequest['input']>;
    let ok: boolean;
    if (input.$case === 'message') {
      ok = verifySignature(facts.spki, req.algorithm, input.value, signature);
    } else if (c.preimage && createHash(hashFor(req.algorithm)).update(c.preimage).digest().equals(input.value)) {
      ok = verifySignature(facts.spki, req.algorithm, c.preimage, signature);
    } else {
      ok = await verifyPrehashed(tmp, facts.spki, req.algorithm, input.value, signature, prehashed++);
    }
    return ok;
  }

  it(`${UNARY_COUNT} unary SignRequests (random bytes, mutated, hostile fields, valid interleaved): each gets its exact code`, { timeout: 60_000 }, async () => {
    const rng = new Prng(SEED);
    const gen = new CaseGenerator(rng, keys);
    const cases = Array.from({ length: UNARY_COUNT }, (_, i) => gen.next(i));
    const seen = new Map<string, number>();
    let next = 0;
    let validOk = 0;
    await Promise.all(Array.from({ length: 24 }, async () => {
      while (next < cases.length) {
        const i = next++;
        const c = cases[i];
        const answer = await unary(c);
        const label = `${c.kind} → ${grpc.status[c.expected]}`;
        seen.set(label, (seen.get(label) ?? 0) + 1);
        assert.equal(grpc.status[answer.code], grpc.status[c.expected],
          `case ${i} (${c.kind}, ${c.identity}, ${c.bytes.length} bytes ${c.bytes.subarray(0, 64).toString('hex')}, key ${JSON.stringify(c.req?.key.slice(0, 40))}): ${answer.details} (seed ${SEED})`);
        if (c.expected !== grpc.status.RESOURCE_EXHAUSTED) tally(answer.code);
        if (answer.code === grpc.status.OK) {
          await checkSignature(c, answer.signature as Buffer, `unary case ${i}`);
          if (c.kind === 'valid') validOk++;
        }
      }
    }));
    console.log(`# unary: ${[...seen].sort().map(([k, v]) => `${k}: ${v}`).join(', ')}`);
    assert.equal(validOk, Math.ceil(UNARY_COUNT / 8), 'every interleaved valid request was signed');
    // The oracle has to exercise every class, or the fuzz proves less than it claims.
    for (const code of ['OK', 'INVALID_ARGUMENT', 'PERMISSION_DENIED', 'NOT_FOUND', 'RESOURCE_EXHAUSTED']) {
      assert.ok([...seen.keys()].some((k) => k.endsWith(code)), `no case expected ${code} (seed ${SEED})`);
    }
  });

  it(`${STREAM_COUNT} items on SignStreams: every item answered once with its exact code, the streams stay open`, { timeout: 60_000 }, async () => {
    const rng = new Prng(SEED ^ 0x5eed);
    const gen = new CaseGenerator(rng, keys);
    const byIdentity = new Map<IdentityName, FuzzCase[]>();
    for (let i = 0; byIdentity.size < IDENTITY_NAMES.length || [...byIdentity.values()].reduce((n, xs) => n + xs.length, 0) < STREAM_COUNT; i++) {
      const c = gen.next(i);
      if (c.bytes.length > MAX_RECEIVE) continue; // one oversized item would end the stream: tested below
      const list = byIdentity.get(c.identity) ?? [];
      list.push(c);
      byIdentity.set(c.identity, list);
    }
    await Promise.all([...byIdentity].map(async ([identity, items]) => {
      const client = clients.get(identity) as grpc.Client;
      const call = client.makeBidiStreamRequest(SIGN_STREAM, (b: Buffer) => b, (b: Buffer) => SignResponse.decode(b), new grpc.Metadata(), { deadline: Date.now() + 30_000 });
      const answers: SignResponse[] = [];
      const ended = new Promise<void>((resolve, reject) => {
        call.on('data', (r: SignResponse) => answers.push(r));
        call.on('error', reject);
        call.on('end', () => resolve());
      });
      for (const c of items) call.write(c.bytes);
      call.end();
      await ended;
      assert.equal(answers.length, items.length, `${identity}: one answer per item (seed ${SEED})`);
      // Undecodable items lose their request_id (answered with 0): match by (request_id, code) multisets.
      const expectedKey = (c: FuzzCase): string => `${c.req?.requestId ?? 0n}/${grpc.status[c.expected]}`;
      const want = items.map(expectedKey).sort();
      const got = answers.map((a) => `${a.requestId}/${grpc.status[a.errorCode]}`).sort();
      const missing = want.filter((w) => !got.includes(w)).slice(0, 5);
      const extra = got.filter((g) => !want.includes(g)).slice(0, 5);
      assert.deepEqual(got, want, `${identity}: answers by request_id and code; missing ${missing.join(' ')}, unexpected ${extra.join(' ')} (seed ${SEED})`);
      const candidates = new Map<bigint, FuzzCase[]>();
      for (const c of items) if (c.expected === grpc.status.OK && c.req) candidates.set(c.req.requestId, [...(candidates.get(c.req.requestId) ?? []), c]);
      for (const a of answers) {
        tally(a.errorCode);
        if (a.errorCode !== 0) { assert.equal(a.signature.length, 0); continue; }
        // Mutations can drop or repeat a request_id: the signature must verify for one of the candidates.
        const cs = candidates.get(a.requestId) ?? [];
        assert.ok(cs.length > 0, `request_id ${a.requestId} belongs to a successful item`);
        let matched: FuzzCase | undefined;
        for (const c of cs) if (await signatureVerifies(c, Buffer.from(a.signature))) { matched = c; break; }
        assert.ok(matched, `${identity} stream item ${a.requestId}: the signature verifies for its request (seed ${SEED})`);
        cs.splice(cs.indexOf(matched), 1);
        verified++;
      }
    }));
  });

  it('an item over limits.maxReceiveMessageBytes ends its stream with RESOURCE_EXHAUSTED; other streams and new calls are unaffected', async () => {
    const ca = fs.readFileSync(gw.env.pki.ca);
    const dev = gw.env.pki.clients.dev;
    const client = new grpc.Client(gw.endpoint, grpc.credentials.createSsl(ca, fs.readFileSync(dev.key), fs.readFileSync(dev.cert)));
    try {
      const open = client.makeBidiStreamRequest(SIGN_STREAM, (b: Buffer) => b, (b: Buffer) => SignResponse.decode(b), new grpc.Metadata(), { deadline: Date.now() + 10_000 });
      const openAnswers: SignResponse[] = [];
      open.on('data', (r: SignResponse) => openAnswers.push(r));
      const openEnded = new Promise<void>((resolve, reject) => { open.on('end', resolve); open.on('error', reject); });
      const message = Buffer.from('still here');
      const good = (id: bigint): Buffer => Buffer.from(SignRequest.encode({ key: 'dev-ec', algorithm: SignatureAlgorithm.ECDSA_SHA256, input: { $case: 'message', value: message }, requestId: id }).finish());
      open.write(good(1n));

      const victim = client.makeBidiStreamRequest(SIGN_STREAM, (b: Buffer) => b, (b: Buffer) => SignResponse.decode(b), new grpc.Metadata(), { deadline: Date.now() + 10_000 });
      const victimAnswers: SignResponse[] = [];
      victim.on('data', (r: SignResponse) => victimAnswers.push(r));
      const victimError = new Promise<grpc.ServiceError>((resolve, reject) => { victim.on('error', resolve); victim.on('end', () => reject(new Error('the stream ended without an error'))); });
      victim.write(good(7n));
      await new Promise((r) => setTimeout(r, 200));
      victim.write(Buffer.from(SignRequest.encode({ key: 'dev-ec', algorithm: SignatureAlgorithm.ECDSA_SHA256, input: { $case: 'message', value: Buffer.alloc(MAX_RECEIVE) }, requestId: 8n }).finish()));
      const err = await victimError;
      assert.equal(grpc.status[err.code], 'RESOURCE_EXHAUSTED', err.details);
      assert.match(err.details, /larger than max|exceeds|message/i);
      assert.deepEqual(victimAnswers.map((a) => [a.requestId, a.errorCode]), [[7n, 0]], 'the item before was answered');

      open.write(good(2n));
      open.end();
      await openEnded;
      assert.deepEqual(openAnswers.map((a) => a.errorCode), [0, 0]);
      const spki = keys.get('dev-ec')?.spki as Buffer;
      for (const a of openAnswers) assert.ok(verifySignature(spki, SignatureAlgorithm.ECDSA_SHA256, message, Buffer.from(a.signature)));
    } finally {
      client.close();
    }
  });

  it('after the fuzz: nothing in flight, no session held, and /metrics counted every answer the pipeline gave, by code', async () => {
    const m = parsePrometheusText(await (await fetch(gw.metricsUrl)).text());
    const value = (name: string): number => m.samples.filter((s) => s.name === name).reduce((a, s) => a + s.value, 0);
    assert.equal(value('hsmgw_in_flight_requests'), 0);
    assert.equal(value('hsmgw_pool_sessions_in_use'), 0);
    assert.equal(value('hsmgw_pool_waiting_requests'), 0);
    assert.equal(gw.gateway.hsm.poolStats.inUse, 0);
    const byCode = new Map<string, number>();
    for (const s of m.samples.filter((x) => x.name === 'hsmgw_sign_requests_total')) byCode.set(s.labels.code, (byCode.get(s.labels.code) ?? 0) + s.value);
    // The unary and stream tests ran first; the oversize test added two OK items on "open" and one on "victim".
    const want = new Map(pipelineCodes);
    want.set('OK', (want.get('OK') ?? 0) + 3);
    assert.deepEqual(Object.fromEntries([...byCode].sort()), Object.fromEntries([...want].sort()));
    console.log(`# answers by code: ${JSON.stringify(Object.fromEntries(byCode))}; signatures verified: ${verified} (${prehashed} openssl checks of mutated digests)`);
    // No caller-supplied string became a label value.
    const keyLabels = new Set(m.samples.filter((x) => x.name === 'hsmgw_sign_requests_total').map((x) => x.labels.key));
    for (const k of keyLabels) assert.ok(k === '-' || ALL_TEST_KEYS.includes(k), `key label ${JSON.stringify(k)}`);
  });
});

/**
 * What a hostile caller can get out of the gateway or leave in its logs (docs/SECURITY.md): no
 * method beyond the four signing/metadata RPCs, no raw RSA block signed, and audit lines that
 * record every signature and count every refusal with bounded, escaped fields, never the PIN, a
 * whole digest or a message.
 */
describe('what a hostile caller can get or leave behind', () => {
  let gw: TestGateway;
  let logFile: string;
  let fd: number;
  let client: grpc.Client;

  before(async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hostile-audit-'));
    logFile = path.join(dir, 'log.jsonl');
    fd = fs.openSync(logFile, 'w');
    gw = await startTestGateway({ logging: { level: 'debug', audit: true } }, new Logger('debug', fd));
    const id = gw.env.pki.clients.dev;
    client = new grpc.Client(gw.endpoint, grpc.credentials.createSsl(fs.readFileSync(gw.env.pki.ca), fs.readFileSync(id.key), fs.readFileSync(id.cert)));
  });
  after(async () => {
    client.close();
    await gw.stop();
    fs.closeSync(fd);
    fs.rmSync(path.dirname(logFile), { recursive: true, force: true });
  });

  const call = (method: string, bytes: Buffer): Promise<{ code: number; details: string }> => new Promise((resolve) => {
    client.makeUnaryRequest(method, (b: Buffer) => b, (b: Buffer) => b, bytes, new grpc.Metadata(), { deadline: Date.now() + 5000 }, (err) => resolve(err ? { code: err.code, details: err.details } : { code: 0, details: '' }));
  });

  it('no decryption, raw-signature or key-export method exists: UNIMPLEMENTED', async () => {
    for (const method of ['Decrypt', 'RawSign', 'SignRaw', 'Unwrap', 'ExportKey', 'Encrypt', 'Derive']) {
      const r = await call(`/hsmgateway.v1.Signer/${method}`, Buffer.alloc(0));
      assert.equal(grpc.status[r.code], 'UNIMPLEMENTED', `${method}: ${r.details}`);
    }
  });

  it('a whole RSA block (256/384 bytes, as raw RSA or a decryption oracle would take) is refused for every RSA algorithm', async () => {
    for (const [key, size] of [['dev-rsa', 256], ['test-rsa3072', 384]] as const) {
      for (const algorithm of RSA_ALGS) {
        for (const $case of ['digest', 'message'] as const) {
          // As a message it is hashed first (a normal signature); as a digest it must be refused.
          const block = Buffer.concat([Buffer.from([0, 2]), Buffer.alloc(size - 2, 0x41)]);
          const r = await call(SIGN, Buffer.from(SignRequest.encode({ key, algorithm, input: { $case, value: block }, requestId: 1n }).finish()));
          assert.equal(grpc.status[r.code], $case === 'digest' ? 'INVALID_ARGUMENT' : 'OK', `${key} ${SignatureAlgorithm[algorithm]} ${$case}: ${r.details}`);
        }
      }
    }
  });

  it('audit: one line per signature (identity, key, algorithm, outcome, latency, digest_fp, rpc, request_id), refusals counted per identity, reason and second; hostile key names escaped and capped; no PIN, digest or message', async () => {
    const message = Buffer.from('a message that must never reach the log: 5ecret-payload');
    const digest = createHash('sha256').update(message).digest();
    const hostileKey = `evil\n{"level":"audit","outcome":"OK"}\u0000${'k'.repeat(300)}`;
    const sends: Array<[string, Buffer]> = [
      ['valid message', Buffer.from(SignRequest.encode({ key: 'dev-ec', algorithm: SignatureAlgorithm.ECDSA_SHA256, input: { $case: 'message', value: message }, requestId: 42n }).finish())],
      ['valid digest', Buffer.from(SignRequest.encode({ key: 'dev-rsa', algorithm: SignatureAlgorithm.RSA_PSS_SHA256, input: { $case: 'digest', value: digest }, requestId: 43n }).finish())],
      ['hostile key', Buffer.from(SignRequest.encode({ key: hostileKey, algorithm: SignatureAlgorithm.ECDSA_SHA256, input: { $case: 'digest', value: digest }, requestId: 44n }).finish())],
      ['undecodable', Buffer.from('0aff', 'hex')],
    ];
    await new Promise((r) => setTimeout(r, 1100)); // earlier refusals are written (they are counted per second)
    const offset = fs.statSync(logFile).size; // earlier tests' lines come before
    for (const [, bytes] of sends) await call(SIGN, bytes);
    await new Promise((r) => setTimeout(r, 1100));
    const text = fs.readFileSync(logFile, 'utf8');
    const lines = text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
    const audits = Buffer.from(text).subarray(offset).toString().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.level === 'audit');
    const signed = audits.filter((a) => a.msg === 'sign');
    const refused = audits.filter((a) => a.msg === 'sign refused');
    assert.equal(signed.length + refused.length, audits.length);
    for (const a of signed) {
      for (const field of ['ts', 'identity', 'key', 'algorithm', 'outcome', 'latency_ms', 'digest_fp', 'rpc', 'request_id']) assert.ok(field in a, `audit field ${field}: ${JSON.stringify(a)}`);
      assert.equal(a.identity, IDENTITIES.dev);
      assert.equal(a.rpc, 'Sign');
    }
    assert.deepEqual(signed.map((a) => [a.request_id, a.outcome]), [['42', 'OK'], ['43', 'OK']], 'one line per signature made');
    assert.equal(signed[1].digest_fp, digest.subarray(0, 8).toString('hex'), 'digest_fp is the first 8 bytes of the signed digest');
    // The two refusals share identity and reason: one line, or two if they straddle a second.
    assert.ok(refused.length >= 1 && refused.length <= 2, JSON.stringify(refused));
    assert.equal(refused.reduce((n, a) => n + Number(a.count), 0), 2, 'both refusals are counted');
    for (const a of refused) {
      assert.deepEqual([a.identity, a.outcome, a.first_rpc], [IDENTITIES.dev, 'INVALID_ARGUMENT', 'Sign']);
      assert.match(String(a.second), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z$/);
      assert.ok(!('digest_fp' in a), 'nothing of a refused request\'s input');
    }
    assert.equal(refused[0].first_key, hostileKey.slice(0, 128), 'a hostile key name is logged JSON-escaped and capped at 128 characters');
    const pin = fs.readFileSync(gw.env.pinFile, 'utf8').trim();
    assert.ok(pin.length >= 4);
    assert.ok(!text.includes(pin), 'the PIN is in no log line');
    assert.ok(!text.includes(digest.toString('hex')) && !text.includes(digest.toString('base64')), 'never the whole digest');
    assert.ok(!text.includes('5ecret-payload') && !text.includes(message.toString('hex')), 'never the message');
    assert.ok(lines.length > audits.length, 'the debug/info lines were captured too (start-up), and they hold no PIN either');
  });
});
