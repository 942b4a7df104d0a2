/** A configuration mistake: one line naming the field, e.g. `config: pkcs11.sessions.max: must be an integer >= 1`. */
export class ConfigError extends Error {
  constructor(readonly field: string, problem: string) {
    super(`config: ${field}: ${problem}`);
    this.name = 'ConfigError';
  }
}
