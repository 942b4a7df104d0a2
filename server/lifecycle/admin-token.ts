import * as fs from 'node:fs';
import * as path from 'node:path';
import { defaultStateDir } from '../bootstrap/embedded-default';
import { ConfigError } from '../config/config-error';
import type { GatewayConfig } from '../config/gateway-config';
import { loadConfigFile } from '../config/load-config';
import { readPin } from '../config/read-pin';
import { HsmModule } from '../pkcs11/hsm-module';
import { errorMessage } from '../../common/errors';

/** The config file admin commands read when --config is not given: the embedded default's. */
export function defaultAdminConfigFile(env: NodeJS.ProcessEnv = process.env): string {
  return env.HSMGW_CONFIG || path.join(defaultStateDir(env), 'config.yaml');
}

/**
 * A logged-in read-write session on the gateway's token, for administrative commands run on the
 * gateway host. Module, token and PIN source come from the gateway's own config file; the PIN is
 * read from its file or environment variable, never from the command line.
 */
export class AdminToken {
  private closed = false;

  private constructor(readonly config: GatewayConfig, readonly module: HsmModule, readonly session: Buffer) {}

  /** Throws ConfigError for a missing or invalid config file, Error for module/token/login failures. */
  static open(configFile: string): AdminToken {
    if (!fs.existsSync(configFile)) {
      throw new ConfigError('(file)', `${configFile} does not exist: pass --config with the gateway's config file (or run "npm start" once to create the embedded default)`);
    }
    const config = loadConfigFile(configFile);
    let pin: string;
    try {
      pin = readPin(config.pkcs11.pin);
    } catch (err) {
      throw new ConfigError(config.pkcs11.pin.file !== undefined ? 'pkcs11.pin.file' : 'pkcs11.pin.env', errorMessage(err).replace(/^pkcs11\.pin\.(file|env): /, ''));
    }
    // The module reads its own configuration (e.g. SOFTHSM2_CONF) when it is initialised.
    Object.assign(process.env, config.pkcs11.environment);
    const module = new HsmModule(config.pkcs11.module);
    module.load();
    module.initialize();
    let session: Buffer | undefined;
    try {
      module.selectToken(config.pkcs11.token);
      session = module.openReadWriteSession();
      module.login(session, pin);
      return new AdminToken(config, module, session);
    } catch (err) {
      if (session) module.closeSession(session);
      module.finalize();
      throw err;
    }
  }

  /** Closes the session (which logs this process out of the token) and finalizes the module. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.module.closeSession(this.session);
    this.module.finalize();
  }
}
