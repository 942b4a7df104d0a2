// Public surface of keyless TLS.
export { KeylessBridge, type KeylessBridgeOptions } from './keyless-bridge';
export { KeylessMetrics } from './keyless-metrics';
export { KEYLESS_PEM_LABEL } from './keyless-key-pem';
export { SignatureAlgorithm, type CreateRemoteSigner, type RemoteSigner } from './remote-signer';
