import { status, type sendUnaryData, type ServerDuplexStream, type ServerUnaryCall } from '@grpc/grpc-js';
import {
  GetKeyRequest, KeyInfo, ListKeysRequest, ListKeysResponse, SignRequest, SignResponse, type SignerServer,
} from '../../proto/generated/hsmgateway/v1/signer';
import type { KeyGrant } from '../auth/authorizer';
import type { AccessPolicyHolder } from '../auth/access-policy';
import type { LimitsConfig } from '../config/gateway-config';
import type { Logger } from '../observability/logger';
import type { GatewayMetrics } from '../observability/metrics';
import type { Hsm } from '../pkcs11/hsm';
import type { ResolvedKey } from '../pkcs11/key-store';
import { callerConnection, type AuthenticatedConnection, type ConnectionLookup } from './caller-connection';
import { deadlineOf } from './deadline';
import { errorMessage } from '../../common/errors';
import { GatewayError, toGatewayError } from './gateway-error';
import type { SignPipeline, SignReply, SignRequestTask } from './sign-pipeline';
import { checkKeyName } from './sign-request-validation';
import type { SignStreamRegistry } from './sign-stream';

export interface SignerServiceDeps {
  hsm: Hsm;
  policy: AccessPolicyHolder;
  connections: ConnectionLookup;
  pipeline: SignPipeline;
  limits: LimitsConfig;
  metrics: GatewayMetrics;
  streams: SignStreamRegistry;
  logger: Logger;
}

function keyInfo(key: ResolvedKey, grant: KeyGrant): KeyInfo {
  return KeyInfo.create({
    name: key.name,
    type: key.type,
    bits: key.bits,
    curve: key.curve,
    publicKey: key.spki,
    algorithms: grant.algorithms === 'any' ? key.algorithms : key.algorithms.filter((a) => (grant.algorithms as Set<number>).has(a)),
    certificateChain: key.certificateChain,
  });
}

/** Answers a unary Sign call. */
class UnaryReply implements SignReply {
  constructor(private readonly callback: sendUnaryData<SignResponse>) {}

  answer(task: SignRequestTask): void {
    const failure = task.failure;
    if (failure) this.callback({ code: failure.code, details: failure.message });
    else this.callback(null, SignResponse.create({ requestId: task.request.requestId, signature: task.signature }));
  }
}

export function createSignerService(deps: SignerServiceDeps): SignerServer {
  const { hsm, policy, connections, pipeline, limits, metrics, streams, logger } = deps;

  const fail = <T>(callback: sendUnaryData<T>, err: unknown): void => {
    const e = toGatewayError(err);
    // The client is told "internal error"; the log keeps what it was.
    if (e.code === status.INTERNAL) logger.error('request failed', { error: errorMessage(e.cause ?? e) });
    callback({ code: e.code, details: e.message });
  };

  /** The caller's connection; counts and rethrows an UNAUTHENTICATED refusal. */
  const caller = (call: Parameters<typeof callerConnection>[0]): AuthenticatedConnection => {
    try {
      return callerConnection(call, connections);
    } catch (err) {
      metrics.authorizationDenied('unauthenticated');
      throw err;
    }
  };

  return {
    sign(call: ServerUnaryCall<SignRequest, SignResponse>, callback: sendUnaryData<SignResponse>): void {
      let connection: AuthenticatedConnection;
      try {
        connection = caller(call);
      } catch (err) {
        fail(callback, err);
        return;
      }
      pipeline.sign(call.request, { connection, rpc: 'Sign', deadline: deadlineOf(call, limits.requestTimeoutMs) }, new UnaryReply(callback));
    },

    signStream(call: ServerDuplexStream<SignRequest, SignResponse>): void {
      try {
        streams.open(call, caller(call), pipeline);
      } catch (err) {
        const e = toGatewayError(err);
        call.emit('error', { code: e.code, details: e.message });
      }
    },

    getKey(call: ServerUnaryCall<GetKeyRequest, KeyInfo>, callback: sendUnaryData<KeyInfo>): void {
      try {
        const { identity } = caller(call);
        checkKeyName(call.request.key);
        const grant = policy.current.authorizer.grant(identity, call.request.key);
        if (!grant) {
          metrics.authorizationDenied('key');
          throw new GatewayError(status.PERMISSION_DENIED, `identity "${identity.label}" may not use key "${call.request.key}"`);
        }
        const key = hsm.key(call.request.key);
        if (!key) throw new GatewayError(status.NOT_FOUND, `no key named "${call.request.key}"`);
        callback(null, keyInfo(key, grant));
      } catch (err) {
        fail(callback, err);
      }
    },

    listKeys(call: ServerUnaryCall<ListKeysRequest, ListKeysResponse>, callback: sendUnaryData<ListKeysResponse>): void {
      try {
        const { identity } = caller(call);
        const keys: KeyInfo[] = [];
        for (const key of hsm.keys()) {
          const grant = policy.current.authorizer.grant(identity, key.name);
          if (grant) keys.push(keyInfo(key, grant));
        }
        callback(null, ListKeysResponse.create({ keys }));
      } catch (err) {
        fail(callback, err);
      }
    },
  };
}
