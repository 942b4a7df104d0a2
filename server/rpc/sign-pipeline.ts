import { status } from '@grpc/grpc-js';
import type { SignRequest } from '../../proto/generated/hsmgateway/v1/signer';
import type { AccessPolicyHolder } from '../auth/access-policy';
import type { LimitsConfig } from '../config/gateway-config';
import type { AuditLog } from '../observability/audit-log';
import type { Logger } from '../observability/logger';
import type { GatewayMetrics } from '../observability/metrics';
import type { Hsm } from '../pkcs11/hsm';
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

  async sign(req: SignRequest, ctx: SignContext): Promise<Buffer> {
    const started = performance.now();
    let keyLabel = '-';
    let code: status = status.OK;
    let message: string | undefined;
    let fingerprint = '';
    const identity = ctx.connection.identity;
    this.inFlight++;
    this.metrics.requestStarted();
    try {
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
      keyLabel = key.name;
      const spec = checkAlgorithmFitsKey(algorithmSpec(req.algorithm), req.algorithm, key);
      if (!authorizer.allows(grant, spec.algorithm)) {
        this.metrics.authorizationDenied('algorithm');
        throw new GatewayError(status.PERMISSION_DENIED, `identity "${identity.label}" may not use ${spec.name} with key "${key.name}"`);
      }
      const data = signInput(req, spec, this.limits.maxMessageBytes);
      fingerprint = inputFingerprint(data, spec);
      if (performance.now() >= ctx.deadline) throw new GatewayError(status.DEADLINE_EXCEEDED, 'deadline already passed; the HSM was not asked');
      const result = await this.hsm.sign(key, spec.algorithm, data, ctx.deadline);
      this.metrics.hsmTimings(result.waitSeconds, result.hsmSeconds);
      return result.signature;
    } catch (err) {
      const gatewayError = toGatewayError(err);
      code = gatewayError.code;
      message = gatewayError.message;
      if (code === status.UNAUTHENTICATED) this.metrics.authorizationDenied('unauthenticated');
      if (code === status.INTERNAL) this.logger.error('sign failed', { error: (err as Error).message });
      throw gatewayError;
    } finally {
      this.inFlight--;
      this.metrics.requestFinished();
      const seconds = (performance.now() - started) / 1000;
      const codeName = STATUS_NAMES[code] ?? String(code);
      const algorithm = algorithmLabel(req.algorithm);
      this.metrics.signAnswered(keyLabel, algorithm, codeName, seconds, ctx.rpc);
      if (code === status.OK) {
        this.audit?.signed({
          identity: identity.label, key: req.key, algorithm, outcome: 'OK', latency_ms: Math.round(seconds * 1e6) / 1e3,
          digest_fp: fingerprint, rpc: ctx.rpc, request_id: req.requestId.toString(),
        });
      } else {
        this.audit?.refused({ identity: identity.label, outcome: codeName, key: req.key.slice(0, 128), algorithm, error: message ?? '', rpc: ctx.rpc });
      }
    }
  }
}
