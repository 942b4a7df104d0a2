import { status } from '@grpc/grpc-js';
import type { SignRequest } from '../../proto/generated/hsmgateway/v1/signer';
import type { AccessPolicyHolder } from '../auth/access-policy';
import type { LimitsConfig } from '../config/gateway-config';
import type { AuditLog } from '../observability/audit-log';
import type { Logger } from '../observability/logger';
import type { GatewayMetrics } from '../observability/metrics';
import type { Hsm } from '../pkcs11/hsm';
import { SignTask } from '../pkcs11/sign-task';
import { algorithmLabel, algorithmSpec } from '../../common/algorithms';
import { checkStillAuthenticated, type AuthenticatedConnection } from './caller-connection';
import { GatewayError, STATUS_NAMES, toGatewayError } from './gateway-error';
import { checkAlgorithmFitsKey, checkKeyName, inputFingerprint, signInput } from './sign-request-validation';
import { isMalformed } from './tolerant-service-definition';

export interface SignContext {
  /** The caller's connection: its certificate's identity, and whether it may still be used. */
  connection: AuthenticatedConnection;
  rpc: 'Sign' | 'SignStream';
  /** performance.now() time after which the HSM must not be asked. */
  deadline: number;
}

/** Where a request's answer goes (the unary call, or the SignStream it came on). */
export interface SignReply {
  /** `task.signature` is set, or `task.failure` says why not. */
  answer(task: SignRequestTask): void;
}

/** One sign request through the pipeline, the HSM layer and a sign thread, and back. */
export class SignRequestTask extends SignTask {
  readonly started = performance.now();
  keyLabel = '-';
  fingerprint = '';
  /** Why no signature, with the exact gRPC status. */
  failure: GatewayError | undefined;

  constructor(private readonly pipeline: SignPipeline, readonly request: SignRequest, readonly context: SignContext, readonly reply: SignReply) {
    super();
  }

  finished(): void {
    this.pipeline.answer(this);
  }
}

/**
 * One sign request, top to bottom:
 * identity → rate limit → authorization → validation → queue → session → mechanism → signature.
 * Every request is counted and timed exactly once, whatever the outcome; each signature made is
 * audited on its own line, refusals are audited in aggregate.
 */
export class SignPipeline {
  private inFlight = 0;

  constructor(
    private readonly hsm: Hsm,
    private readonly policy: AccessPolicyHolder,
    private readonly limits: LimitsConfig,
    private readonly metrics: GatewayMetrics,
    private readonly logger: Logger,
    private readonly audit: AuditLog | undefined,
  ) {}

  /** Requests being handled now (read at scrape time). */
  get requestsInFlight(): number {
    return this.inFlight;
  }

  /** Starts a request; its answer goes to `reply`, possibly before this returns. */
  sign(req: SignRequest, ctx: SignContext, reply: SignReply): void {
    const task = new SignRequestTask(this, req, ctx, reply);
    this.inFlight++;
    try {
      this.admit(task);
    } catch (err) {
      task.error = err as Error;
      this.answer(task);
      return;
    }
    this.hsm.sign(task);
  }

  /** Everything before the HSM: throws a GatewayError for a request that must not reach it. */
  private admit(task: SignRequestTask): void {
    const { request: req, context: ctx } = task;
    const identity = ctx.connection.identity;
    checkStillAuthenticated(ctx.connection);
    if (this.inFlight > this.limits.maxInFlight) {
      throw new GatewayError(status.RESOURCE_EXHAUSTED, `gateway at its limit of ${this.limits.maxInFlight} requests in flight; retry with backoff`);
    }
    const { authorizer, rateLimiter } = this.policy.current;
    const rate = rateLimiter.take(identity);
    if (!rate.allowed) {
      this.metrics.rateLimited(identity.label);
      throw new GatewayError(status.RESOURCE_EXHAUSTED, `rate limit of ${rate.limit.perSecond}/s (burst ${rate.limit.burst}) exceeded for "${identity.label}"; retry after ${rate.retryAfterMs} ms`);
    }
    if (isMalformed(req)) throw new GatewayError(status.INVALID_ARGUMENT, `not a valid hsmgateway.v1.SignRequest: ${req.malformed}`);
    checkKeyName(req.key);
    const grant = authorizer.grant(identity, req.key);
    if (!grant) {
      this.metrics.authorizationDenied('key');
      // Same answer whether or not the key exists.
      throw new GatewayError(status.PERMISSION_DENIED, `identity "${identity.label}" may not use key "${req.key}"`);
    }
    const key = this.hsm.key(req.key);
    if (!key) throw new GatewayError(status.NOT_FOUND, `no key named "${req.key}"`);
    task.keyLabel = key.name;
    const spec = checkAlgorithmFitsKey(algorithmSpec(req.algorithm), req.algorithm, key);
    if (!authorizer.allows(grant, spec.algorithm)) {
      this.metrics.authorizationDenied('algorithm');
      throw new GatewayError(status.PERMISSION_DENIED, `identity "${identity.label}" may not use ${spec.name} with key "${key.name}"`);
    }
    task.data = signInput(req, spec, this.limits.maxMessageBytes);
    task.fingerprint = inputFingerprint(task.data, spec);
    if (performance.now() >= ctx.deadline) throw new GatewayError(status.DEADLINE_EXCEEDED, 'deadline already passed; the HSM was not asked');
    task.key = key;
    task.algorithm = spec.algorithm;
    task.deadline = ctx.deadline;
  }

  /** Counts, times and audits the request once, then hands it to its reply. */
  answer(task: SignRequestTask): void {
    this.inFlight--;
    const { request: req, context: ctx } = task;
    const seconds = (performance.now() - task.started) / 1000;
    const algorithm = algorithmLabel(req.algorithm);
    const identity = ctx.connection.identity.label;
    if (task.error) {
      const failure = toGatewayError(task.error);
      task.failure = failure;
      if (failure.code === status.UNAUTHENTICATED) this.metrics.authorizationDenied('unauthenticated');
      if (failure.code === status.INTERNAL) this.logger.error('sign failed', { error: task.error.message });
      const codeName = STATUS_NAMES[failure.code] ?? String(failure.code);
      this.metrics.signAnswered(task.keyLabel, algorithm, codeName, seconds, ctx.rpc);
      this.audit?.refused({ identity, outcome: codeName, key: req.key.slice(0, 128), algorithm, error: failure.message, rpc: ctx.rpc });
    } else {
      this.metrics.signAnswered(task.keyLabel, algorithm, 'OK', seconds, ctx.rpc);
      this.metrics.hsmTimings(task.waitSeconds, task.hsmSeconds);
      this.audit?.signed(identity, req.key, algorithm, seconds, task.fingerprint, ctx.rpc, req.requestId);
    }
    task.reply.answer(task);
  }
}
