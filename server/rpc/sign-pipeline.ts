import { status } from '@grpc/grpc-js';
import type { SignRequest } from '../../proto/generated/hsmgateway/v1/signer';
import type { AccessPolicyHolder } from '../auth/access-policy';
import type { LimitsConfig } from '../config/gateway-config';
import type { Logger } from '../observability/logger';
import type { GatewayMetrics } from '../observability/metrics';
import type { Hsm } from '../pkcs11/hsm';
import { algorithmLabel, algorithmSpec } from '../signing/algorithms';
import { GatewayError, STATUS_NAMES, toGatewayError } from './gateway-error';
import { checkAlgorithmFitsKey, checkKeyName, signInput } from './sign-request-validation';
import { isMalformed } from './tolerant-service-definition';

export interface SignContext {
  identity: string;
  rpc: 'Sign' | 'SignStream';
  /** performance.now() time after which the HSM must not be asked. */
  deadline: number;
}

/**
 * One sign request, top to bottom:
 * identity → rate limit → authorization → validation → queue → session → mechanism → signature.
 * Every request is counted, timed and audited exactly once, whatever the outcome.
 */
export class SignPipeline {
  private inFlight = 0;

  constructor(
    private readonly hsm: Hsm,
    private readonly policy: AccessPolicyHolder,
    private readonly limits: LimitsConfig,
    private readonly metrics: GatewayMetrics,
    private readonly logger: Logger,
    private readonly audit: boolean,
  ) {}

  async sign(req: SignRequest, ctx: SignContext): Promise<Buffer> {
    const started = performance.now();
    let keyLabel = '-';
    let code: status = status.OK;
    let message: string | undefined;
    let fingerprint = '';
    this.inFlight++;
    this.metrics.requestStarted();
    try {
      if (this.inFlight > this.limits.maxInFlight) {
        throw new GatewayError(status.RESOURCE_EXHAUSTED, `gateway at its limit of ${this.limits.maxInFlight} requests in flight; retry with backoff`);
      }
      const { authorizer, rateLimiter } = this.policy.current;
      const rate = rateLimiter.take(ctx.identity);
      if (!rate.allowed) {
        this.metrics.rateLimited(ctx.identity);
        throw new GatewayError(status.RESOURCE_EXHAUSTED, `rate limit of ${rate.limit.perSecond}/s (burst ${rate.limit.burst}) exceeded for "${ctx.identity}"; retry after ${rate.retryAfterMs} ms`);
      }
      if (isMalformed(req)) throw new GatewayError(status.INVALID_ARGUMENT, `not a valid hsmgateway.v1.SignRequest: ${req.malformed}`);
      checkKeyName(req.key);
      const grant = authorizer.grant(ctx.identity, req.key);
      if (!grant) {
        this.metrics.authorizationDenied('key');
        // Same answer whether or not the key exists.
        throw new GatewayError(status.PERMISSION_DENIED, `identity "${ctx.identity}" may not use key "${req.key}"`);
      }
      const key = this.hsm.key(req.key);
      if (!key) throw new GatewayError(status.NOT_FOUND, `no key named "${req.key}"`);
      keyLabel = key.name;
      const spec = checkAlgorithmFitsKey(algorithmSpec(req.algorithm), req.algorithm, key);
      if (!authorizer.allows(grant, spec.algorithm)) {
        this.metrics.authorizationDenied('algorithm');
        throw new GatewayError(status.PERMISSION_DENIED, `identity "${ctx.identity}" may not use ${spec.name} with key "${key.name}"`);
      }
      const data = signInput(req, spec, this.limits.maxMessageBytes);
      fingerprint = data.subarray(0, 8).toString('hex');
      if (performance.now() >= ctx.deadline) throw new GatewayError(status.DEADLINE_EXCEEDED, 'deadline already passed; the HSM was not asked');
      const result = await this.hsm.sign(key, spec.algorithm, data, ctx.deadline);
      this.metrics.hsmTimings(result.waitSeconds, result.hsmSeconds);
      return result.signature;
    } catch (err) {
      const gatewayError = toGatewayError(err);
      code = gatewayError.code;
      message = gatewayError.message;
      if (code === status.INTERNAL) this.logger.error('sign failed', { error: (err as Error).message });
      throw gatewayError;
    } finally {
      this.inFlight--;
      this.metrics.requestFinished();
      const seconds = (performance.now() - started) / 1000;
      const codeName = STATUS_NAMES[code] ?? String(code);
      const algorithm = algorithmLabel(req.algorithm);
      this.metrics.signAnswered(keyLabel, algorithm, codeName, seconds, ctx.rpc);
      if (this.audit) {
        this.logger.audit('sign', {
          identity: ctx.identity, key: req.key.slice(0, 128), algorithm, outcome: codeName, error: message,
          latency_ms: Math.round(seconds * 1e6) / 1e3, digest_fp: fingerprint, rpc: ctx.rpc, request_id: req.requestId.toString(),
        });
      }
    }
  }
}
