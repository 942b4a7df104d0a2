// Child of nonblocking-mode.test.ts: opens N TLS connections to 127.0.0.1:PORT at once (with
// SERVERNAME as SNI) and prints, as JSON, 'ok' or the error of each full handshake.
import * as tls from 'node:tls';

function handshake(port: number, servername: string): Promise<string> {
  return new Promise((resolve) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername, rejectUnauthorized: false });
    socket.once('secureConnect', () => {
      socket.end();
      resolve('ok');
    });
    socket.once('error', (error) => resolve(error.message));
  });
}

const [port, count, servername] = process.argv.slice(2);
void Promise.all(Array.from({ length: Number(count) }, () => handshake(Number(port), servername ?? 'localhost'))).then((results) => {
  process.stdout.write(JSON.stringify(results));
});
