#!/usr/bin/env node
// Builds the standalone keyless provider for nginx, HAProxy and other OpenSSL 3 programs:
// client/keyless/native/build/hsmgw-provider.so, from the same core as the Node addon
// (src/core) with its standalone front end (src/standalone), against the system's OpenSSL 3
// headers and libcrypto (Debian: libssl-dev). Without the headers it says how to get them and
// exits 0 (the Node client does not need this module); `--require` makes that an error.
'use strict';
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const { generateNativeAlgorithms } = require('./generate-native-algorithms');

const root = path.resolve(__dirname, '..');
const nativeDir = path.join(root, 'client', 'keyless', 'native');
const src = path.join(nativeDir, 'src');
const output = path.join(nativeDir, 'build', 'hsmgw-provider.so');
const HEADER = '/usr/include/openssl/core_dispatch.h';

function main(argv) {
  const required = argv.includes('--require');
  if (!fs.existsSync(HEADER)) {
    const message = `keyless provider: skipped (no OpenSSL 3 development headers at ${HEADER}; apt-get install libssl-dev, then npm run build:provider)`;
    if (required) throw new Error(message);
    console.log(message);
    return;
  }
  const generated = path.dirname(generateNativeAlgorithms());
  const sources = ['core', 'standalone'].flatMap((dir) => fs.readdirSync(path.join(src, dir)).filter((f) => f.endsWith('.cc')).map((f) => path.join(src, dir, f)));
  fs.mkdirSync(path.dirname(output), { recursive: true });
  execFileSync('g++', [
    '-std=gnu++17', '-O2', '-g', '-fPIC', '-shared', '-fvisibility=hidden', '-Wall', '-Wextra', '-Wno-unused-parameter', '-Werror',
    '-DOPENSSL_API_COMPAT=30000', '-DOPENSSL_NO_DEPRECATED',
    `-I${path.join(src, 'core')}`, `-I${path.join(src, 'standalone')}`, `-I${generated}`,
    ...sources, '-o', output, '-lcrypto',
  ], { stdio: 'inherit' });
  console.log(`keyless provider: ${path.relative(root, output)}`);
}

try {
  main(process.argv.slice(2));
} catch (error) {
  console.error(`keyless provider build failed: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
}
