// The JavaScript half of the non-blocking mode: hooks into Node's TLS internals that
// pair each server TLSWrap handle with its SSL, switch it to async mode at the right
// moment and resume it from the main loop. Every internal used is listed in
// docs/NON-BLOCKING.md and checked by the start-up self-check.
//
//  - tls.TLSSocket.prototype._wrapHandle (lib/_tls_wrap.js) creates the TLSWrap
//    handle; the SSL is created inside it (the addon sees it through ex_data).
//  - handle.enableCertCb() makes the handshake stop at the certificate callback;
//    handle.certCbDone() continues it. The continuation is deferred to the loop and
//    the SSL armed just before, so everything from ClientHello to the certificate
//    callback (SNICallback, 'OCSPRequest', servername) runs on the main stack and
//    only the rest of the handshake runs in the job.
//  - handle.newSessionDone() is TLSWrap::Cycle(): its SSL_read resumes a paused job.
//  - handle.destroySSL() frees the SSL: a paused job is unwound first.
import * as tls from 'node:tls';

import type { KeylessAddon } from './keyless-addon';

/** What the mode needs from a server TLSWrap handle. */
interface TlsWrapHandle {
  certCbDone(): void;
  enableCertCb(): void;
  newSessionDone(): void;
  destroySSL(): void;
}

interface InternalTlsOptions {
  isServer?: boolean;
  ALPNCallback?: unknown;
  pskCallback?: unknown;
}

interface InternalTlsSocket {
  _tlsOptions?: InternalTlsOptions;
  destroy(error?: Error): void;
}

type WrapHandle = (this: InternalTlsSocket, ...args: unknown[]) => unknown;

/** Why a server connection stays blocking. */
export type RefusalReason = 'alpn_callback' | 'psk_callback' | 'internals_missing';

const HANDLE_METHODS = ['certCbDone', 'enableCertCb', 'newSessionDone', 'destroySSL'] as const;

function isTlsWrapHandle(value: unknown): value is TlsWrapHandle {
  if (typeof value !== 'object' || value === null) return false;
  const candidate = value as Record<string, unknown>;
  return HANDLE_METHODS.every((name) => typeof candidate[name] === 'function');
}

function wrapHandlePrototype(): { _wrapHandle?: unknown } {
  return tls.TLSSocket.prototype as unknown as { _wrapHandle?: unknown };
}

/** Undefined if the TLSSocket internal the hooks patch exists; otherwise what is missing. */
export function missingSocketInternals(): string | undefined {
  return typeof wrapHandlePrototype()._wrapHandle === 'function' ? undefined : 'tls.TLSSocket.prototype._wrapHandle';
}

export class TlsHooks {
  /** Server connections kept blocking, by reason (for the metrics). */
  readonly refusals = new Map<RefusalReason, number>();
  /** Set when a server handle lacked one of HANDLE_METHODS. */
  missingHandleMethods = false;

  /** Armed handles, by connection id, until destroySSL. */
  private readonly handles = new Map<number, TlsWrapHandle>();
  private original: WrapHandle | undefined;

  constructor(private readonly addon: KeylessAddon) {}

  get installed(): boolean {
    return this.original !== undefined;
  }

  install(): void {
    if (this.original !== undefined) return;
    const proto = wrapHandlePrototype();
    const original = proto._wrapHandle;
    if (typeof original !== 'function') throw new Error('keyless: tls.TLSSocket.prototype._wrapHandle is missing');
    this.addon.enableNonBlocking((connId) => this.handles.get(connId)?.newSessionDone());
    this.original = original as WrapHandle;
    const hooks = this;
    proto._wrapHandle = function wrapHandle(this: InternalTlsSocket, ...args: unknown[]): unknown {
      return hooks.wrap(this, original as WrapHandle, args);
    };
  }

  /** Restores _wrapHandle; connections already armed finish normally. */
  uninstall(): void {
    if (this.original === undefined) return;
    wrapHandlePrototype()._wrapHandle = this.original;
    this.original = undefined;
  }

  private refuse(reason: RefusalReason): void {
    this.refusals.set(reason, (this.refusals.get(reason) ?? 0) + 1);
  }

  private wrap(socket: InternalTlsSocket, original: WrapHandle, args: unknown[]): unknown {
    const options = socket._tlsOptions;
    if (options?.isServer !== true) return original.apply(socket, args);
    // These callbacks run JavaScript after the certificate callback, which would be
    // inside the job: such connections stay blocking.
    if (options.ALPNCallback !== undefined && options.ALPNCallback !== null) {
      this.refuse('alpn_callback');
      return original.apply(socket, args);
    }
    if (options.pskCallback !== undefined && options.pskCallback !== null) {
      this.refuse('psk_callback');
      return original.apply(socket, args);
    }
    this.addon.beginWrap();
    let handle: unknown;
    let connId = 0;
    try {
      handle = original.apply(socket, args);
    } finally {
      connId = this.addon.endWrap();
    }
    if (connId !== 0) this.hook(socket, handle, connId);
    return handle;
  }

  private hook(socket: InternalTlsSocket, handle: unknown, connId: number): void {
    if (!isTlsWrapHandle(handle)) {
      this.addon.untrack(connId);
      this.missingHandleMethods = true;
      this.refuse('internals_missing');
      return;
    }
    const { certCbDone, destroySSL } = handle;
    let destroyed = false;
    handle.enableCertCb();
    handle.certCbDone = (): void => {
      // Node calls this from its certificate callback when SNICallback answers at
      // once, i.e. inside SSL_read: continue from the loop instead, where the job
      // can start. An asynchronous SNICallback just waits one more turn.
      setImmediate(() => {
        if (destroyed) return;
        if (this.addon.arm(connId)) this.handles.set(connId, handle);
        try {
          certCbDone.call(handle);
        } catch (error) {
          socket.destroy(error instanceof Error ? error : new Error(String(error)));
        }
      });
    };
    handle.destroySSL = (): void => {
      destroyed = true;
      this.handles.delete(connId);
      this.addon.release(connId);
      destroySSL.call(handle);
    };
  }
}
