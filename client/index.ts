/** The public surface of `hsm-gateway/client`. */
export { GatewayClient, algorithmValue, type AlgorithmName, type KeyDescription } from './gateway-client';
export { GatewayClientError } from './gateway-client-error';
export type { GatewayClientOptions } from './gateway-client-options';
export type { KeylessMode } from './keyless/keyless-options';
export { SignatureAlgorithm, KeyType } from '../proto/generated/hsmgateway/v1/signer';
export { GatewaySigner, type GatewaySignerOptions, type SignOptions, type HashName } from './gateway-signer';
export { createRemoteCrypto, remoteCryptoKey, type RemoteCryptoKey, type RemoteKeyKind, type MessageSigner } from '../common/x509/remote-crypto';
export type { SubjectAltNames } from '../common/x509/certificates';
export type { KeylessTlsCredentials, TlsCredentialsOptions } from './gateway-client';
export { runKeylessCluster, type KeylessClusterOptions } from './keyless-cluster';
export type { SecureContextTarget, TlsCredentialsFollower } from './tls-credentials-follower';
export type { ShareTicketKeysOptions, TicketKeySharing, TicketKeySharingStats, TicketKeyServer } from './ticket-keys/share-ticket-keys';
export type { TicketKeySetView, TicketKeyListener } from './ticket-keys/ticket-key-stream';
