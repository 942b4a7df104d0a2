/**
 * A TCP forwarder that adds a round-trip delay between a proxy and the real gateway: every chunk
 * from the proxy reaches the gateway `delayMs` later (answers come back at once), so a request
 * and its answer take `delayMs` more. Chunks keep their order (one FIFO per direction). Runs in
 * the process that starts it (the bench orchestrator, a test), not in the proxy.
 */
import * as net from 'node:net';

export class LatencyForwarder {
  /** Added round trip, ms (0: a plain pipe). */
  delayMs = 0;
  private readonly sockets = new Set<net.Socket>();
  private delaySum = 0;
  private delayCount = 0;

  private constructor(private readonly server: net.Server, readonly port: number) {}

  static async start(target: { host: string; port: number }): Promise<LatencyForwarder> {
    let forwarder: LatencyForwarder | undefined;
    const server = net.createServer((client) => forwarder?.forward(client, target));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    forwarder = new LatencyForwarder(server, (server.address() as net.AddressInfo).port);
    return forwarder;
  }

  private forward(client: net.Socket, target: { host: string; port: number }): void {
    const upstream = net.connect(target.port, target.host);
    for (const socket of [client, upstream]) {
      this.sockets.add(socket);
      socket.setNoDelay(true);
      socket.on('close', () => this.sockets.delete(socket));
      socket.on('error', () => { client.destroy(); upstream.destroy(); });
    }
    // Proxy -> gateway: delayed, in order.
    const queue: Array<{ due: number; arrived: number; chunk: Buffer }> = [];
    let timer: NodeJS.Timeout | undefined;
    const drain = (): void => {
      timer = undefined;
      const now = performance.now();
      while (queue.length > 0 && (queue[0]?.due ?? Infinity) <= now) {
        const { chunk, arrived } = queue.shift() as { chunk: Buffer; arrived: number };
        this.delaySum += now - arrived;
        this.delayCount++;
        upstream.write(chunk);
      }
      if (queue.length > 0) timer = setTimeout(drain, Math.max(0, (queue[0]?.due ?? now) - now));
    };
    client.on('data', (chunk: Buffer) => {
      if (this.delayMs <= 0 && queue.length === 0) {
        this.delayCount++;
        upstream.write(chunk);
        return;
      }
      const arrived = performance.now();
      queue.push({ due: arrived + this.delayMs, arrived, chunk });
      timer ??= setTimeout(drain, this.delayMs);
    });
    client.on('end', () => upstream.end());
    upstream.pipe(client);
  }

  /** Mean delay added to the chunks forwarded since the last reset, ms. */
  observedDelayMs(): number {
    return this.delayCount > 0 ? this.delaySum / this.delayCount : 0;
  }

  resetObservedDelay(): void {
    this.delaySum = 0;
    this.delayCount = 0;
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
