/**
 * The client mix of the resumption bench: a population of clients, 90 % of connections from a
 * returning client (offering its last session) and 10 % from a new one; each client's connections
 * alternate between the proxies, as behind a load balancer that does not pin clients.
 */
import * as tls from 'node:tls';

export interface MixResult {
  connections: number;
  resumed: number;
  failures: number;
  firstError?: string;
  seconds: number;
}

interface Client {
  session: Buffer | undefined;
  next: number;
}

/** One TLS 1.3 connection; resolves with whether it resumed and the newest session it got. */
function connect(port: number, ca: string, session: Buffer | undefined): Promise<{ reused: boolean; session: Buffer | undefined }> {
  return new Promise((resolve, reject) => {
    let latest: Buffer | undefined;
    let reused = false;
    const socket = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ca, session, minVersion: 'TLSv1.3' }, () => { reused = socket.isSessionReused(); });
    socket.on('session', (s: Buffer) => { latest = s; });
    socket.on('error', reject);
    socket.resume();
    socket.on('close', () => resolve({ reused, session: latest ?? session }));
  });
}

/**
 * Runs `connections` connections, `concurrency` at a time, from a seeded population of clients.
 * Each client first connects once, unmeasured: the mix is measured in its steady state.
 */
export async function runReturningClients(
  ports: number[], ca: string, connections: number, concurrency: number, afterWarmUp: () => Promise<void>, returningShare = 0.9,
): Promise<MixResult> {
  const clients: Client[] = Array.from({ length: concurrency * 4 }, (_, i) => ({ session: undefined, next: i % ports.length }));
  for (const client of clients) {
    const warm = await connect(ports[client.next], ca, undefined);
    client.session = warm.session;
    client.next = (client.next + 1) % ports.length;
  }
  await afterWarmUp();
  // A fixed sequence (xorshift), so both configurations see the same mix.
  let seed = 0x9e3779b9;
  const random = (): number => {
    seed ^= seed << 13; seed ^= seed >>> 17; seed ^= seed << 5;
    return (seed >>> 0) / 0x1_0000_0000;
  };
  const result: MixResult = { connections: 0, resumed: 0, failures: 0, seconds: 0 };
  let issued = 0;
  const started = performance.now();
  const worker = async (): Promise<void> => {
    while (issued < connections) {
      const n = issued++;
      const client = clients[n % clients.length];
      if (random() >= returningShare) client.session = undefined;
      const port = ports[client.next];
      client.next = (client.next + 1) % ports.length;
      try {
        const r = await connect(port, ca, client.session);
        client.session = r.session;
        result.connections++;
        if (r.reused) result.resumed++;
      } catch (err) {
        result.failures++;
        result.firstError ??= (err as Error).message;
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  result.seconds = (performance.now() - started) / 1000;
  return result;
}
