import { ConfigError } from '../../server/config/config-error';
import { loadConfigFile } from '../../server/config/load-config';
import { defaultStateDir, ensureEmbeddedDefault } from '../../server/bootstrap/embedded-default';
import { Gateway } from '../../server/gateway';
import { Logger } from '../../server/observability/logger';

export const SERVE_HELP = `Usage: hsm-gateway serve [--config FILE] [--sign-threads N]

Runs the gateway. With --config (or HSMGW_CONFIG) it serves that YAML file. Without one it
runs the embedded default: a SoftHSM2 token with keys dev-ec and dev-rsa in the state
directory (HSMGW_STATE_DIR, default .hsm-gateway/), created on first start.

Environment overrides: HSMGW_LISTEN (gRPC, default 127.0.0.1:8443),
HSMGW_METRICS_LISTEN (HTTP, default 127.0.0.1:9464), HSMGW_PKCS11_MODULE, HSMGW_TOKEN_LABEL,
HSMGW_PIN_FILE, HSMGW_LOG_LEVEL, HSMGW_SIGN_THREADS (also --sign-threads: pkcs11.signThreads,
threads running the PKCS#11 sign calls, default 2; 1 costs less CPU per ECDSA signature, RSA
needs one per core).

Signals: SIGTERM/SIGINT stop gracefully; SIGHUP reloads the TLS files and certificate chains.`;

export async function serveCommand(configFile: string | undefined): Promise<number> {
  const say = (line: string): void => { process.stderr.write(`${line}\n`); };
  let file = configFile ?? process.env.HSMGW_CONFIG;
  if (!file) {
    const stateDir = defaultStateDir();
    const embedded = await ensureEmbeddedDefault(stateDir, say);
    file = embedded.configFile;
    if (embedded.created.length) {
      say(`hsm-gateway: embedded default set up in ${stateDir}:`);
      for (const line of embedded.created) say(`  - ${line}`);
    } else {
      say(`hsm-gateway: reusing the embedded default in ${stateDir}`);
    }
  }
  let config;
  try {
    config = loadConfigFile(file);
  } catch (err) {
    if (err instanceof ConfigError) {
      say(err.message);
      return 2;
    }
    throw err;
  }
  const logger = new Logger(config.logging.level);
  let gateway: Gateway;
  try {
    gateway = await Gateway.start(config, logger, { configFile: file });
  } catch (err) {
    // A problem found on the token at start (e.g. the ticket-key root) is a configuration error too.
    if (err instanceof ConfigError) {
      logger.error('cannot start', { error: err.message });
      logger.flush();
      say(err.message);
      return 2;
    }
    throw err;
  }
  if (!configFile && !process.env.HSMGW_CONFIG) {
    say(`hsm-gateway: serving gRPC on ${config.listen.grpc.replace(/:\d+$/, `:${gateway.grpcPort}`)}, metrics on http://${config.listen.http.replace(/:\d+$/, `:${gateway.httpPort}`)}/metrics`);
    say('Try a signature (in another terminal; the digest is SHA-256("hello")):');
    say('  npx hsm-gateway sign --key dev-ec --alg ECDSA_SHA256 --digest 2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824');
  }
  await new Promise<void>((resolve) => {
    const stop = (signal: string): void => {
      logger.info('signal received', { signal });
      void gateway.stop().then(resolve);
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
    process.on('SIGHUP', () => gateway.reload('SIGHUP'));
  });
  return 0;
}
