/**
 * The grpc-js floor: a Signer server that answers Sign and SignStream at once with a constant
 * signature, no HSM, same mTLS set-up as the gateway. Forked by bench/run.ts; it sends its port
 * over IPC and exits when the orchestrator goes away. What the gateway spends above this stub is
 * the gateway's own code; what the stub spends is grpc-js, HTTP/2, TLS and protobuf in Node.
 */
import * as fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { KeyInfo, SignResponse, SignerService, type GetKeyRequest, type SignRequest, type SignerServer } from '../../proto/generated/hsmgateway/v1/signer';

const SIGNATURE = randomBytes(72);
const [caFile, certFile, keyFile] = process.argv.slice(2);

const service: Partial<SignerServer> = {
  sign(call: grpc.ServerUnaryCall<SignRequest, SignResponse>, callback: grpc.sendUnaryData<SignResponse>) {
    callback(null, SignResponse.create({ requestId: call.request.requestId, signature: SIGNATURE }));
  },
  getKey(call: grpc.ServerUnaryCall<GetKeyRequest, KeyInfo>, callback: grpc.sendUnaryData<KeyInfo>) {
    callback(null, KeyInfo.create({ name: call.request.key }));
  },
  signStream(call: grpc.ServerDuplexStream<SignRequest, SignResponse>) {
    call.on('data', (req: SignRequest) => call.write(SignResponse.create({ requestId: req.requestId, signature: SIGNATURE })));
    call.on('end', () => call.end());
  },
};

const server = new grpc.Server();
server.addService(SignerService, service as SignerServer);
const credentials = grpc.ServerCredentials.createSsl(fs.readFileSync(caFile), [{ cert_chain: fs.readFileSync(certFile), private_key: fs.readFileSync(keyFile) }], true);
server.bindAsync('127.0.0.1:0', credentials, (err, port) => {
  if (err) throw err;
  process.send?.({ type: 'listening', port });
});
process.on('disconnect', () => process.exit(0));
