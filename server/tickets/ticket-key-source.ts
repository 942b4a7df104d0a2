import type { Hsm } from '../pkcs11/hsm';
import { HsmUnavailableError } from '../pkcs11/hsm-errors';
import { findTicketRoot, macWithTicketRoot } from '../pkcs11/ticket-root';
import { derivationInput, expandTicketKey, type TicketKeyMaterial } from './ticket-key-derivation';
import type { TicketKeysSection } from '../config/gateway-config';
import { epochAt, windowsAt, type EpochWindow } from './ticket-epochs';
import { errorMessage } from '../../common/errors';


export type TicketKey = EpochWindow & TicketKeyMaterial;

export interface TicketKeySnapshot {
  scope: string;
  epochSeconds: number;
  /** Newest first; the current epoch's key is always present. */
  keys: TicketKey[];
  /** Unix seconds of the next epoch boundary. */
  nextUpdate: number;
  /** False when a key the set should hold could not be derived (HSM down): ask again soon. */
  complete: boolean;
}

export interface DerivationObserver {
  derived(ok: boolean, error?: string): void;
}

/**
 * Derives each scope's epoch keys in the HSM, once per scope and epoch, and caches them. While the
 * HSM is down the cached keys keep serving; only a set without the current epoch's key fails.
 */
export class TicketKeySource {
  private root: { handle: Buffer; generation: number } | undefined;
  private readonly cache = new Map<string, TicketKeyMaterial>();

  constructor(private readonly hsm: Hsm, readonly config: TicketKeysSection, private readonly observer: DerivationObserver) {}

  /** Finds and checks the root (start-up): a missing or extractable root throws TicketRootError. */
  checkRoot(): void {
    this.hsm.withControlSession((module, session, generation) => {
      this.root = { handle: findTicketRoot(module, session, this.config.root), generation };
    });
  }

  snapshot(scope: string, nowSeconds: number): TicketKeySnapshot {
    const windows = windowsAt(this.config, nowSeconds);
    const current = epochAt(this.config, nowSeconds);
    this.forgetBefore(scope, current - this.config.decryptEpochs);
    const keys: TicketKey[] = [];
    let failure: Error | undefined;
    for (const window of windows) {
      try {
        keys.push({ ...window, ...this.material(scope, window.epoch) });
      } catch (err) {
        failure = err as Error;
        if (window.epoch === current) throw err instanceof HsmUnavailableError ? err : new HsmUnavailableError(`ticket key derivation failed: ${failure.message}`);
      }
    }
    return { scope, epochSeconds: this.config.epochSeconds, keys, nextUpdate: (current + 1) * this.config.epochSeconds, complete: failure === undefined };
  }

  private material(scope: string, epoch: number): TicketKeyMaterial {
    const id = `${scope}\u0000${epoch}`;
    const cached = this.cache.get(id);
    if (cached) return cached;
    try {
      const secret = this.hsm.withControlSession((module, session, generation) => {
        // After a reconnect the root's old handle may name another object: look it up again.
        if (this.root?.generation !== generation) this.root = { handle: findTicketRoot(module, session, this.config.root), generation };
        return macWithTicketRoot(module, session, this.root.handle, derivationInput(scope, this.config.epochSeconds, epoch));
      });
      const material = expandTicketKey(secret);
      secret.fill(0);
      this.cache.set(id, material);
      this.observer.derived(true);
      return material;
    } catch (err) {
      this.observer.derived(false, errorMessage(err));
      throw err;
    }
  }

  private forgetBefore(scope: string, oldestEpoch: number): void {
    const prefix = `${scope}\u0000`;
    for (const id of this.cache.keys()) {
      if (id.startsWith(prefix) && Number(id.slice(prefix.length)) < oldestEpoch) this.cache.delete(id);
    }
  }
}
