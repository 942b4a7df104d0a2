import * as grpc from '@grpc/grpc-js';
import type { TicketKeySet, TicketKeysClient } from '../../proto/generated/hsmgateway/v1/ticket_keys';
import { GatewayClientError } from '../gateway-client-error';

/** A scope's keys as the gateway sent them. Times are Unix seconds. */
export interface TicketKeySetView {
  scope: string;
  epochSeconds: number;
  /** Unix seconds at which the gateway sends the next set. */
  nextUpdate: number;
  keys: Array<{ epoch: number; name: Buffer; hmacKey: Buffer; aesKey: Buffer; notBefore: number; encryptUntil: number; decryptUntil: number }>;
}

export interface TicketKeyListener {
  update(set: TicketKeySetView): void;
  /** The gateway refused the scope (after the first set): the stream is not reopened. */
  refused(error: GatewayClientError): void;
}

/** Codes that no other endpoint or retry will change. */
const FINAL_CODES = new Set([grpc.status.PERMISSION_DENIED, grpc.status.UNAUTHENTICATED, grpc.status.INVALID_ARGUMENT, grpc.status.UNIMPLEMENTED]);
const MAX_BACKOFF_MS = 5000;

function view(set: TicketKeySet): TicketKeySetView {
  return {
    scope: set.scope,
    epochSeconds: set.epochSeconds,
    nextUpdate: Number(set.nextUpdate),
    keys: set.keys.map((k) => ({
      epoch: Number(k.epoch), name: Buffer.from(k.name), hmacKey: Buffer.from(k.hmacKey), aesKey: Buffer.from(k.aesKey),
      notBefore: Number(k.notBefore), encryptUntil: Number(k.encryptUntil), decryptUntil: Number(k.decryptUntil),
    })),
  };
}

/**
 * Follows WatchTicketKeys for one scope: reopens the stream on another endpoint, with backoff,
 * when it breaks (a gateway restarting, a connection aged out), and stops for good on a refusal.
 */
export class TicketKeyStream {
  private call: grpc.ClientReadableStream<TicketKeySet> | undefined;
  private closed = false;
  private attempt = 0;
  private endpoint = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  private readonly firstSet: Promise<TicketKeySetView>;
  private settleFirst: { resolve(set: TicketKeySetView): void; reject(err: GatewayClientError): void } | undefined;

  constructor(
    private readonly clients: ReadonlyArray<{ address: string; client: TicketKeysClient }>,
    readonly scope: string,
    private readonly listener: TicketKeyListener,
    /** How long the first set may take (endpoints are retried meanwhile). */
    firstSetTimeoutMs: number,
  ) {
    this.firstSet = new Promise((resolve, reject) => { this.settleFirst = { resolve, reject }; });
    this.firstSet.catch(() => undefined);
    const timer = setTimeout(() => this.failFirst(new GatewayClientError(grpc.status.DEADLINE_EXCEEDED, `no ticket keys for scope "${scope}" within ${firstSetTimeoutMs} ms`)), firstSetTimeoutMs);
    timer.unref();
    void this.firstSet.finally(() => clearTimeout(timer)).catch(() => undefined);
    this.open();
  }

  /** The first set; rejects with a GatewayClientError (its code) if the gateway refuses. */
  first(): Promise<TicketKeySetView> {
    return this.firstSet;
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.retryTimer);
    this.call?.cancel();
    this.call = undefined;
    this.failFirst(new GatewayClientError(grpc.status.CANCELLED, 'closed'));
  }

  private open(): void {
    if (this.closed) return;
    const { address, client } = this.clients[this.endpoint % this.clients.length];
    const call = client.watchTicketKeys({ scope: this.scope });
    this.call = call;
    call.on('data', (set: TicketKeySet) => {
      this.attempt = 0;
      const v = view(set);
      if (this.settleFirst) {
        this.settleFirst.resolve(v);
        this.settleFirst = undefined;
      }
      this.listener.update(v);
    });
    call.on('error', (err: grpc.ServiceError) => this.broken(call, GatewayClientError.from(err, address)));
    call.on('end', () => this.broken(call, new GatewayClientError(grpc.status.UNAVAILABLE, 'the gateway ended the ticket key stream', address)));
  }

  private broken(call: grpc.ClientReadableStream<TicketKeySet>, error: GatewayClientError): void {
    if (this.call !== call || this.closed) return;
    this.call = undefined;
    if (FINAL_CODES.has(error.code)) {
      this.closed = true;
      if (this.settleFirst) this.failFirst(error);
      else this.listener.refused(error);
      return;
    }
    // Another endpoint next, after a backoff that doubles up to 5 s.
    this.endpoint++;
    const delay = Math.min(100 * 2 ** this.attempt++, MAX_BACKOFF_MS);
    this.retryTimer = setTimeout(() => this.open(), delay);
    this.retryTimer.unref();
  }

  private failFirst(error: GatewayClientError): void {
    if (!this.settleFirst) return;
    this.settleFirst.reject(error);
    this.settleFirst = undefined;
    if (!this.closed) this.close();
  }
}
