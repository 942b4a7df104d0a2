import * as fs from 'node:fs';
import * as path from 'node:path';
import { GatewayClient } from '../../client/gateway-client';
import type { GatewayClientOptions } from '../../client/gateway-client-options';
import { devPkiPaths } from '../../server/bootstrap/dev-pki';
import { defaultStateDir } from '../../server/bootstrap/embedded-default';
import { DEFAULT_GRPC_LISTEN } from '../../server/config/load-config';

export const CLIENT_OPTIONS_HELP = `Connection options (default: the embedded default's dev PKI in HSMGW_STATE_DIR):
  --endpoint HOST:PORT   gateway address (repeatable; default HSMGW_LISTEN or ${DEFAULT_GRPC_LISTEN})
  --ca FILE              CA that issued the gateway's certificate
  --cert FILE            client certificate
  --key-file FILE        client private key
  --json                 machine-readable output`;

export interface ClientFlags {
  endpoint?: string[];
  ca?: string;
  cert?: string;
  'key-file'?: string;
}

export const CLIENT_FLAG_SPEC = {
  endpoint: { type: 'string', multiple: true },
  ca: { type: 'string' },
  cert: { type: 'string' },
  'key-file': { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

function read(flag: string, file: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch {
    throw new Error(`--${flag}: cannot read ${file}${flag !== 'ca' && !fs.existsSync(path.dirname(file)) ? ' (start the gateway once with `npm start` to create the dev PKI)' : ''}`);
  }
}

/** GatewayClient options from the connection flags, then the embedded default's dev PKI (files read now). */
export function clientOptionsFromFlags(flags: ClientFlags): GatewayClientOptions {
  const pki = devPkiPaths(path.join(defaultStateDir(), 'pki'));
  return {
    endpoints: flags.endpoint?.length ? flags.endpoint : [process.env.HSMGW_LISTEN || DEFAULT_GRPC_LISTEN],
    ca: read('ca', flags.ca ?? pki.ca),
    cert: read('cert', flags.cert ?? pki.clientCert),
    key: read('key-file', flags['key-file'] ?? pki.clientKey),
    // The dev server certificate names localhost; sending an IP as TLS SNI is deprecated (DEP0123).
    serverName: flags.ca === undefined ? 'localhost' : undefined,
  };
}

/** A client for the CLI's own calls (one attempt per call). */
export function clientFromFlags(flags: ClientFlags): GatewayClient {
  return new GatewayClient({ ...clientOptionsFromFlags(flags), maxRetries: 0 });
}
