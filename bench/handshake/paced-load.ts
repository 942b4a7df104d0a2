/**
 * A paced TLS load for the handshake bench (forked): full TLS 1.3 handshakes started at a fixed
 * rate, whatever the server's speed (open loop), so that two servers see the same offered load.
 * BENCH_PACED_LOAD = {"port": N, "rate": R}; runs until disconnected, reporting counts on ask.
 */
import * as tls from 'node:tls';

const { port, rate } = JSON.parse(process.env.BENCH_PACED_LOAD ?? '{}') as { port: number; rate: number };
const counts = { started: 0, completed: 0, errors: 0 };
// One context for every connection (a context per connection would cost the load more than the server).
const secureContext = tls.createSecureContext({ minVersion: 'TLSv1.3' });

function handshake(): void {
  counts.started++;
  const socket = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, secureContext });
  socket.once('secureConnect', () => {
    counts.completed++;
    socket.destroy();
  });
  socket.once('error', () => {
    counts.errors++;
    socket.destroy();
  });
}

// A 1 ms tick starts the handshakes that are due: the rate holds even when ticks are late.
const started = performance.now();
setInterval(() => {
  const due = Math.floor(((performance.now() - started) / 1000) * rate);
  while (counts.started < due) handshake();
}, 1);
process.on('message', () => process.send?.({ ...counts }));
process.on('disconnect', () => process.exit(0));
