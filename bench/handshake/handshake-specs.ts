/** What a handshake-bench HTTPS server process is asked to run. */
import type { KeyKind } from '../sign/sign-specs';

export interface HttpsServerSpec {
  key: KeyKind;
  /** pem: key and certificate from PEM files; keyless: GatewayClient.tlsCredentials(keyName). */
  mode: 'pem' | 'keyless';
  /** 0: one process; n: a node:cluster primary with n workers. */
  workers: number;
  port: number;
  pem?: { keyFile: string; certFile: string };
  keyless?: { keyName: string; endpoint: string; caFile: string; certFile: string; keyFile: string };
}

/** Messages from a server process (or its cluster primary) to the orchestrator. */
export type FromServer =
  | { type: 'listening'; pids: number[] }
  | { type: 'counts'; handshakes: number; clientErrors: number; firstError?: string }
  | { type: 'failed'; message: string };

export type ToServer = { type: 'counts' };
