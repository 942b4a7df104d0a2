#!/usr/bin/env node
// Generates proto/generated/ from proto/**/*.proto with ts-proto, using the protoc
// binary shipped in the `protoc` npm package (works offline, no apt dependency).
'use strict';
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const protoDir = path.join(root, 'proto');
const outDir = path.join(protoDir, 'generated');
const plugin = path.join(root, 'node_modules', '.bin', 'protoc-gen-ts_proto');
const protoc = path.join(root, 'node_modules', '.bin', 'protoc');

const options = [
  'outputServices=grpc-js',
  'env=node',
  'useOptionals=messages',
  'oneof=unions-value',
  'forceLong=bigint',
  'esModuleInterop=true',
].join(',');

fs.rmSync(outDir, { recursive: true, force: true });
fs.mkdirSync(outDir, { recursive: true });
execFileSync(protoc, [
  `--plugin=protoc-gen-ts_proto=${plugin}`,
  `--ts_proto_out=${outDir}`,
  `--ts_proto_opt=${options}`,
  `-I${protoDir}`,
  path.join(protoDir, 'hsmgateway', 'v1', 'signer.proto'),
  path.join(protoDir, 'hsmgateway', 'v1', 'ticket_keys.proto'),
], { stdio: 'inherit' });

// The native code's copy of the SignatureAlgorithm numbers comes from the same proto.
require('./generate-native-algorithms').generateNativeAlgorithms();
