// prom-client is an optional peer dependency of @hsm-gateway/client: a proxy that never mounts
// the client's metrics does not need it. Loaded here, on first use, and nowhere else.
export type PromClient = typeof import('prom-client');

let cached: PromClient | null | undefined;

function isMissing(error: unknown, name: string): boolean {
  return error instanceof Error && (error as NodeJS.ErrnoException).code === 'MODULE_NOT_FOUND' && error.message.includes(`'${name}'`);
}

/** prom-client if it is installed, else undefined (any other load failure is thrown). */
export function optionalPromClient(): PromClient | undefined {
  if (cached !== undefined) return cached ?? undefined;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    cached = require('prom-client') as PromClient;
  } catch (error) {
    if (!isMissing(error, 'prom-client')) throw error;
    cached = null;
  }
  return cached ?? undefined;
}

/** The one error for a feature that needs prom-client when it is not installed. */
export function promClientMissing(feature: string): Error {
  return new Error(`${feature} needs prom-client (an optional peer dependency of @hsm-gateway/client): npm install prom-client@^15`);
}

/** prom-client, or one clear error saying which feature needs it and how to get it. */
export function requirePromClient(feature: string): PromClient {
  const promClient = optionalPromClient();
  if (promClient === undefined) throw promClientMissing(feature);
  return promClient;
}
