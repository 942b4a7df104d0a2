// `hsm-gateway agent`: the local signing agent of nginx, HAProxy and any OpenSSL 3 program that
// loads the standalone keyless provider. It listens on a Unix socket (mode 0660, an optional
// group), admits only peers whose uid or gid is allowed (SO_PEERCRED), and turns each sign
// request (agent-protocol.ts) into a signature over its GatewayClient's SignStreams: failover,
// deadlines and one HTTP/2 write per event-loop turn for all the server's worker processes.
import * as fs from 'node:fs';
import * as net from 'node:net';
import { status } from '@grpc/grpc-js';
import type { GatewayClient } from '../gateway-client';
import { GatewayClientError } from '../gateway-client-error';
import { loadKeylessAddon } from '../keyless/keyless-addon';
import { algorithmSpec } from '../../common/algorithms';
import { encodeError, encodeSignature, FrameReader, ProtocolError, type SignRequestFrame } from './agent-protocol';
import type { AgentMetrics } from './agent-metrics';


export interface KeylessAgentOptions {
  socketPath: string;
  /** Group that owns the socket (so that its members may connect); default: the agent's. */
  socketGid?: number;
  /** Peers admitted by uid or by gid (a peer passes if either is listed). */
  allowUids: readonly number[];
  allowGids: readonly number[];
  client: GatewayClient;
  metrics: AgentMetrics;
  log(level: 'info' | 'warn' | 'error', message: string, fields?: Record<string, unknown>): void;
}

interface PeerSocket extends net.Socket {
  _handle?: { fd?: number };
}

/** Throws if another process is listening on `path`; removes a stale socket file. */
async function claimSocketPath(path: string): Promise<void> {
  if (!fs.existsSync(path)) return;
  if (!fs.lstatSync(path).isSocket()) throw new Error(`${path} exists and is not a socket; refusing to replace it`);
  const live = await new Promise<boolean>((resolve) => {
    const probe = net.connect(path, () => { probe.destroy(); resolve(true); });
    probe.once('error', () => resolve(false));
  });
  if (live) throw new Error(`another agent is listening on ${path}`);
  fs.unlinkSync(path);
}

export class KeylessAgent {
  private client: GatewayClient;
  private readonly sockets = new Set<net.Socket>();
  private inFlight = 0;
  private drained: (() => void) | undefined;

  private constructor(private readonly server: net.Server, private readonly options: KeylessAgentOptions) {
    this.client = options.client;
  }

  static async start(options: KeylessAgentOptions): Promise<KeylessAgent> {
    await claimSocketPath(options.socketPath);
    const server = net.createServer();
    const agent = new KeylessAgent(server, options);
    server.on('connection', (socket: PeerSocket) => agent.admit(socket));
    // Created with no access for others: the umask covers the moment before chmod.
    const umask = process.umask(0o177);
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(options.socketPath, () => resolve());
      });
    } finally {
      process.umask(umask);
    }
    if (options.socketGid !== undefined) fs.chownSync(options.socketPath, -1, options.socketGid);
    fs.chmodSync(options.socketPath, 0o660);
    return agent;
  }

  /** New signatures use this client (graceful reload); the caller closes the old one. */
  setClient(client: GatewayClient): void {
    this.client = client;
  }

  get connections(): number {
    return this.sockets.size;
  }

  private admit(socket: PeerSocket): void {
    const fd = socket._handle?.fd;
    let peer: { pid: number; uid: number; gid: number } | undefined;
    try {
      if (fd !== undefined) peer = loadKeylessAddon().peerCredentials(fd);
    } catch {
      peer = undefined;
    }
    if (peer === undefined || !(this.options.allowUids.includes(peer.uid) || this.options.allowGids.includes(peer.gid))) {
      this.options.metrics.peerRefused();
      this.options.log('warn', 'agent: peer refused (uid and gid not allowed)', peer ?? { fd });
      socket.destroy();
      return;
    }
    this.sockets.add(socket);
    this.options.metrics.connections(this.sockets.size);
    const reader = new FrameReader();
    socket.on('data', (chunk: Buffer) => {
      let requests: SignRequestFrame[];
      try {
        requests = reader.push(chunk);
      } catch (error) {
        this.options.metrics.protocolError();
        this.options.log('warn', 'agent: protocol error, connection closed', { pid: peer?.pid, error: (error as ProtocolError).message });
        socket.destroy();
        return;
      }
      for (const request of requests) this.sign(socket, request);
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.sockets.delete(socket);
      this.options.metrics.connections(this.sockets.size);
    });
  }

  private sign(socket: net.Socket, request: SignRequestFrame): void {
    const { requestId, algorithm, keyName, input } = request;
    if (algorithmSpec(algorithm) === undefined) {
      this.answer(socket, encodeError(requestId, status.INVALID_ARGUMENT, `unknown algorithm ${algorithm}`), 'INVALID_ARGUMENT', 0);
      return;
    }
    const started = performance.now();
    this.inFlight++;
    this.client.signStreamed(keyName, algorithm, input).then(
      (signature) => this.answer(socket, encodeSignature(requestId, signature), 'OK', started),
      (error: unknown) => {
        const e = error instanceof GatewayClientError ? error : new GatewayClientError(status.INTERNAL, error instanceof Error ? error.message : String(error));
        this.answer(socket, encodeError(requestId, e.code, e.details), e.codeName, started);
      },
    ).finally(() => {
      if (--this.inFlight === 0) this.drained?.();
    });
  }

  private answer(socket: net.Socket, frame: Buffer, result: string, started: number): void {
    this.options.metrics.signed(result, started > 0 ? (performance.now() - started) / 1000 : undefined);
    if (!socket.destroyed) socket.write(frame);
  }

  /** Stops accepting, lets the signatures in flight finish (at most `graceMs`), then closes. */
  async close(graceMs: number): Promise<void> {
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    if (this.inFlight > 0) {
      await Promise.race([
        new Promise<void>((resolve) => { this.drained = resolve; }),
        new Promise<void>((resolve) => setTimeout(resolve, graceMs).unref()),
      ]);
    }
    for (const socket of this.sockets) socket.destroy();
  }
}
