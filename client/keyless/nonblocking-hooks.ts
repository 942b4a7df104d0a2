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
//
// certCbDone and destroySSL are replaced once, on the TLSWrap prototype, by shared
// functions that act only on tracked handles (a connection id in a symbol slot):
// nothing is allocated per connection but that id and a map entry.
import * as tls from 'node:tls';

import type { KeylessAddon } from './keyless-addon';
import type { MainThreadSigners } from './main-thread-signers';

/** What the mode needs from a server TLSWrap handle. */
interface TlsWrapHandle {
  certCbDone(): void;
  enableCertCb(): void;
  newSessionDone(): void;
  destroySSL(): void;
}

/** A tracked handle: its connection id and its socket, in symbol slots. */
interface TrackedHandle extends TlsWrapHandle {
  [CONN_ID]?: number;
  [SOCKET]?: InternalTlsSocket;
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
type HandleMethod = (this: TlsWrapHandle) => void;

/** Why a server connection stays blocking. */
export type RefusalReason = 'alpn_callback' | 'psk_callback' | 'internals_missing';

const HANDLE_METHODS = ['certCbDone', 'enableCertCb', 'newSessionDone', 'destroySSL'] as const;
const CONN_ID = Symbol('hsmgw.keyless.connId');
const SOCKET = Symbol('hsmgw.keyless.socket');

function isTlsWrapHandle(value: unknown): value is TlsWrapHandle {
  if (typeof value !== 'object' || value === null) return false;
  const candidate = value as Record<string, unknown>;
  return HANDLE_METHODS.every((name) => typeof candidate[name] === 'function');
}

function wrapHandlePrototype(): { _wrapHandle?: unknown } {
  return tls.TLSSocket.prototype as unknown as { _wrapHandle?: unknown };
}

/** The object of `handle`'s prototype chain that defines `name`. */
function definingPrototype(handle: object, name: string): Record<string, unknown> | undefined {
  for (let proto: object | null = Object.getPrototypeOf(handle); proto !== null; proto = Object.getPrototypeOf(proto)) {
    if (Object.prototype.hasOwnProperty.call(proto, name)) return proto as Record<string, unknown>;
  }
  return undefined;
}

/** Undefined if the TLSSocket internal the hooks patch exists; otherwise what is missing. */
export function missingSocketInternals(): string | undefined {
  return typeof wrapHandlePrototype()._wrapHandle === 'function' ? undefined : 'tls.TLSSocket.prototype._wrapHandle';
}

/** A method replaced on a prototype, to put back on uninstall. */
interface Patched {
  owner: Record<string, unknown>;
  name: string;
  original: unknown;
}

export class TlsHooks {
  /** Server connections kept blocking, by reason (for the metrics). */
  readonly refusals = new Map<RefusalReason, number>();
  /** Set when a server handle lacked one of HANDLE_METHODS. */
  missingHandleMethods = false;

  /** Armed handles, by connection id, until destroySSL. */
  private readonly handles = new Map<number, TrackedHandle>();
  /** Handles whose certificate callback is done, continued together on the next turn. */
  private continuations: TrackedHandle[] = [];
  private readonly patched: Patched[] = [];
  private handleMethodsPatched = false;
  private originalCertCbDone: HandleMethod | undefined;

  constructor(
    private readonly addon: KeylessAddon,
    private readonly signers: MainThreadSigners,
  ) {}

  install(): void {
    if (this.patched.length > 0) return;
    const proto = wrapHandlePrototype() as Record<string, unknown>;
    const original = proto._wrapHandle;
    if (typeof original !== 'function') throw new Error('keyless: tls.TLSSocket.prototype._wrapHandle is missing');
    this.addon.enableNonBlocking(this.resume, this.signers.dispatch);
    const hooks = this;
    this.patch(proto, '_wrapHandle', function wrapHandle(this: InternalTlsSocket, ...args: unknown[]): unknown {
      return hooks.wrap(this, original as WrapHandle, args);
    });
  }

  /** Restores what install() replaced; connections already armed finish normally. */
  uninstall(): void {
    for (const { owner, name, original } of this.patched.splice(0).reverse()) owner[name] = original;
    this.handleMethodsPatched = false;
  }

  private patch(owner: Record<string, unknown>, name: string, replacement: unknown): void {
    this.patched.push({ owner, name, original: owner[name] });
    owner[name] = replacement;
  }

  private readonly resume = (connId: number): void => {
    this.handles.get(connId)?.newSessionDone();
  };

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
    if (connId !== 0) this.track(socket, handle, connId);
    return handle;
  }

  private track(socket: InternalTlsSocket, handle: unknown, connId: number): void {
    if (!isTlsWrapHandle(handle) || !this.patchHandleMethods(handle)) {
      this.addon.untrack(connId);
      this.missingHandleMethods = true;
      this.refuse('internals_missing');
      return;
    }
    const tracked = handle as TrackedHandle;
    tracked[CONN_ID] = connId;
    tracked[SOCKET] = socket;
    handle.enableCertCb();
  }

  /** Replaces certCbDone and destroySSL on the TLSWrap prototype, once. */
  private patchHandleMethods(handle: TlsWrapHandle): boolean {
    if (this.handleMethodsPatched) return true;
    const certOwner = definingPrototype(handle, 'certCbDone');
    const destroyOwner = definingPrototype(handle, 'destroySSL');
    if (certOwner === undefined || destroyOwner === undefined) return false;
    const hooks = this;
    const certCbDone = certOwner.certCbDone as HandleMethod;
    const destroySSL = destroyOwner.destroySSL as HandleMethod;
    this.originalCertCbDone = certCbDone;
    // Node calls certCbDone from its certificate callback when SNICallback answers at
    // once, i.e. inside SSL_read: continue from the loop instead, where the job can
    // start. An asynchronous SNICallback just waits one more turn.
    this.patch(certOwner, 'certCbDone', function certCbDoneLater(this: TrackedHandle): void {
      if (this[CONN_ID] === undefined) return certCbDone.call(this);
      if (hooks.continuations.push(this) === 1) setImmediate(hooks.continueAll);
    });
    this.patch(destroyOwner, 'destroySSL', function destroySSLAfterRelease(this: TrackedHandle): void {
      const connId = this[CONN_ID];
      if (connId !== undefined) {
        this[CONN_ID] = undefined;
        this[SOCKET] = undefined;
        hooks.handles.delete(connId);
        hooks.addon.release(connId);
      }
      destroySSL.call(this);
    });
    this.handleMethodsPatched = true;
    return true;
  }

  /**
   * Arms each waiting connection and continues its handshake, which starts its job; the
   * signatures the jobs paused for go to their signers right away, in one batch.
   */
  private readonly continueAll = (): void => {
    const handles = this.continuations;
    this.continuations = [];
    const certCbDone = this.originalCertCbDone as HandleMethod;
    this.addon.holdDispatch();
    try {
      for (const handle of handles) {
        const connId = handle[CONN_ID];
        if (connId === undefined) continue; // destroyed meanwhile
        if (this.addon.arm(connId)) this.handles.set(connId, handle);
        try {
          certCbDone.call(handle);
        } catch (error) {
          handle[SOCKET]?.destroy(error instanceof Error ? error : new Error(String(error)));
        }
      }
    } finally {
      this.signers.dispatch(this.addon.takeSignRequests());
    }
  };
}
