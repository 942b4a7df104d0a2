/** What a handshake-bench proxy process is asked to run, and the messages it exchanges. */
import type { KeylessMode } from '../../client/keyless/keyless-options';
import type { KeyKind } from '../sign/sign-specs';

/** 'pem': a local key (the baseline); otherwise keyless through the gateway in that mode ('auto' is the default). */
export type ProxyServerKind = 'pem' | KeylessMode;

export interface ProxySpec {
  key: KeyKind;
  server: ProxyServerKind;
  pem: { keyFile: string; certFile: string };
  keyless: { keyName: string; endpoint: string; serverName: string; caFile: string; certFile: string; keyFile: string };
}

/** One measurement window of a proxy, from its own point of view. */
export interface ProxyWindow {
  handshakes: number;
  clientErrors: number;
  firstError?: string;
  /** Event-loop delay over the window (perf_hooks.monitorEventLoopDelay, 1 ms resolution), ms. */
  loopDelayP50Ms: number;
  loopDelayP99Ms: number;
  loopDelayMaxMs: number;
  rssBytes: number;
  /** Keyless, non-blocking: signatures made paused, and the dispatches that sent them (one per loop turn at most). */
  asyncSignatures: number;
  dispatches: number;
}

export type ToProxy = { type: 'window-start' } | { type: 'window-end' } | { type: 'rss' };

export type FromProxy =
  | { type: 'listening'; port: number; mode: string; mainThreadId: number }
  | { type: 'window'; window: ProxyWindow }
  | { type: 'rss'; handshakes: number; rssBytes: number }
  | { type: 'failed'; message: string };
