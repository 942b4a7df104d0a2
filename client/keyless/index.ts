// Public surface of keyless TLS: terminate TLS with a certificate whose private key
// stays in the HSM behind the gateway; only the handshake signature is remote.
//
//   const bridge = await KeylessBridge.start({ signerModule: '/abs/path/gateway-signer.js', signerOptions });
//   const spki = new X509Certificate(certPem).publicKey.export({ type: 'spki', format: 'der' });
//   https.createServer({ cert: certPem, key: bridge.keyPem('web-ec', spki) }, handler);
//   tls.connect({ cert: clientCertPem, key: bridge.keyPem('client', clientSpki), ... });  // mTLS upstream
//
// By default (mode 'auto') server handshakes pause while the signature is in flight and the
// bridge's signer on this thread sends it (docs/NON-BLOCKING.md; relies on Node internals,
// checked at start-up with a fallback to blocking). The blocking path (mode 'blocking', client
// keys, guarded servers) waits for the bridge's worker thread, at most signTimeoutMs. Resumed
// sessions need no signature. TLS 1.2 static-RSA cipher suites cannot work (no decryption) and
// fail with a readable error. On Node <= 22, do not read `asymmetricKeyDetails` of a KeyObject
// made from a keyless PEM (Node asserts on provider-only EC keys).
export { KeylessBridge, type KeylessBridgeOptions, type KeylessMode } from './keyless-bridge';
export { KeylessMetrics } from './keyless-metrics';
export { KEYLESS_PEM_LABEL } from './keyless-key-pem';
export { SignatureAlgorithm, type CreateRemoteSigner, type RemoteSigner } from './remote-signer';
