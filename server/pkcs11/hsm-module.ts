import * as pkcs11js from 'pkcs11js';
import type { TokenSelector } from '../config/gateway-config';
import { ckrName, isLoggedInState, Pkcs11CallError, tolerate } from './ckr';
import { errorMessage } from '../../common/errors';

/** The loaded PKCS#11 library and the one token we use. Synchronous calls only; no policy. */
export class HsmModule {
  readonly p11 = new pkcs11js.PKCS11();
  private slot: Buffer | undefined;
  private loaded = false;
  private initialized = false;
  private initializations = 0;

  constructor(readonly modulePath: string) {}

  load(): void {
    if (this.loaded) return;
    try {
      this.p11.load(this.modulePath);
    } catch (err) {
      throw new Error(`cannot load PKCS#11 module ${this.modulePath}: ${errorMessage(err)}`);
    }
    this.loaded = true;
  }

  /** OS locking is mandatory: without it SoftHSM corrupts its heap under concurrent signing. */
  initialize(): void {
    tolerate(() => this.p11.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK }), 'CKR_CRYPTOKI_ALREADY_INITIALIZED');
    this.initialized = true;
    this.initializations++;
  }

  /**
   * Which initialization of the module handles come from. Session and object handles are only
   * numbers, and a module re-initialized after a failure hands the same numbers out again
   * (SoftHSM does) for other sessions and objects: a handle is used only in its own generation.
   */
  get generation(): number {
    return this.initializations;
  }

  finalize(): void {
    if (!this.initialized) return;
    this.initialized = false;
    this.slot = undefined;
    tolerate(() => this.p11.C_Finalize(), 'CKR_CRYPTOKI_NOT_INITIALIZED');
  }

  /** Finds the slot whose token matches; the error lists the tokens that are present. */
  selectToken(selector: TokenSelector): void {
    const seen: string[] = [];
    for (const slot of this.p11.C_GetSlotList(true)) {
      const info = this.p11.C_GetTokenInfo(slot);
      const label = info.label.trim();
      const serial = info.serialNumber.trim();
      seen.push(`"${label}" (serial ${serial})`);
      if (selector.label !== undefined && selector.label !== label) continue;
      if (selector.serial !== undefined && selector.serial !== serial) continue;
      this.slot = slot;
      return;
    }
    const wanted = [selector.label && `label "${selector.label}"`, selector.serial && `serial "${selector.serial}"`].filter(Boolean).join(' and ');
    throw new Error(`no token with ${wanted} in ${this.modulePath}; tokens present: ${seen.length ? seen.join(', ') : 'none'}`);
  }

  openSession(): Buffer {
    if (!this.slot) throw new Error('no token selected');
    return this.p11.C_OpenSession(this.slot, pkcs11js.CKF_SERIAL_SESSION);
  }

  /** A read-write session, for administrative changes (key generation, certificate objects). */
  openReadWriteSession(): Buffer {
    if (!this.slot) throw new Error('no token selected');
    return this.p11.C_OpenSession(this.slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
  }

  /** True when a token with this label is present. */
  hasToken(label: string): boolean {
    return this.p11.C_GetSlotList(true).some((slot) => this.p11.C_GetTokenInfo(slot).label.trim() === label);
  }

  closeSession(session: Buffer): void {
    tolerate(() => this.p11.C_CloseSession(session), 'CKR_SESSION_HANDLE_INVALID', 'CKR_SESSION_CLOSED', 'CKR_CRYPTOKI_NOT_INITIALIZED', 'CKR_DEVICE_REMOVED', 'CKR_TOKEN_NOT_PRESENT');
  }

  /** Logs the token in. The PIN is never part of an error: pkcs11js only reports the CKR name. */
  login(session: Buffer, pin: string): void {
    try {
      this.p11.C_Login(session, pkcs11js.CKU_USER, pin);
    } catch (err) {
      if (ckrName(err) === 'CKR_USER_ALREADY_LOGGED_IN') return;
      const ckr = ckrName(err);
      if (ckr === undefined) throw err;
      throw new Pkcs11CallError(ckr, `token login failed: ${ckr}`, { cause: err });
    }
  }

  isLoggedIn(session: Buffer): boolean {
    return isLoggedInState(this.p11.C_GetSessionInfo(session).state);
  }

  /** True when the session still exists (used to validate idle pooled sessions). */
  sessionAlive(session: Buffer): boolean {
    try {
      this.p11.C_GetSessionInfo(session);
      return true;
    } catch {
      return false;
    }
  }

  findObjects(session: Buffer, template: pkcs11js.Template, max = 16): Buffer[] {
    this.p11.C_FindObjectsInit(session, template);
    try {
      return this.p11.C_FindObjects(session, max);
    } finally {
      this.p11.C_FindObjectsFinal(session);
    }
  }
}
