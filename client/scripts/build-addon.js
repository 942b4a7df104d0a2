#!/usr/bin/env node
// Builds the keyless N-API addon (client/keyless/native) with node-gyp, offline. It lives in the
// @hsm-gateway/client package (its install script, and `npm rebuild @hsm-gateway/client`) and runs
// in the repository through scripts/build-addon.js.
//
//   node scripts/build-addon.js            # for the node running this script
//   node scripts/build-addon.js --all      # also for node_modules/node22 and node24 (if installed)
//   node scripts/build-addon.js --node /path/to/bin/node   # for another node binary
//   node scripts/build-addon.js --install  # the package's install script: nothing to do when a
//                                          # prebuild matches; otherwise build, and on failure
//                                          # warn (keyless use then says how to build) and exit 0
//
// In the repository each build is also copied to the prebuilds/ layout the loader reads first,
//   client/prebuilds/<platform>-<arch>/keyless.abi<ABI>.<libc>.node
// which the @hsm-gateway/client tarball ships.
//
// Each target builds in its own staging directory,
//   client/keyless/native/build/node-<major>/
// (a copy of binding.gyp pointing back at ../../src) and ends up as
//   client/keyless/native/build/node-<major>/keyless.node
// which client/keyless/keyless-addon.ts loads for process.versions.node's major.
// Headers come from the target's own include/node (nodedir); OpenSSL symbols are
// resolved against the node binary at load time, never against a libcrypto.
'use strict';
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

// This file is <client>/scripts/build-addon.js, in the repository and in the package.
const clientDir = path.resolve(__dirname, '..');
const nativeDir = path.join(clientDir, 'keyless', 'native');
const repoRoot = path.resolve(clientDir, '..');
const inRepository = fs.existsSync(path.join(repoRoot, 'scripts', 'generate-native-algorithms.js'));
const root = inRepository ? repoRoot : clientDir;
const GENERATED_HEADER = path.join(nativeDir, 'build', 'generated', 'signature_algorithm.h');

// The repository generates the header from the proto; the package ships it.
function generateNativeAlgorithms() {
  if (inRepository) {
    require(path.join(repoRoot, 'scripts', 'generate-native-algorithms.js')).generateNativeAlgorithms();
  } else if (!fs.existsSync(GENERATED_HEADER)) {
    throw new Error(`${GENERATED_HEADER} is missing from the package`);
  }
}

function runtimeOf(nodeBinary) {
  const script = 'const h = process.report.getReport().header; console.log(JSON.stringify({ platform: process.platform, arch: process.arch, ' +
    'abi: process.versions.modules, libc: process.platform === "linux" ? (h.glibcVersionRuntime ? "glibc" : "musl") : "" }))';
  return JSON.parse(execFileSync(nodeBinary, ['-e', script], { encoding: 'utf8' }));
}

/** prebuilds/<platform>-<arch>/keyless.abi<ABI>[.<libc>].node: the layout client/keyless/keyless-addon.ts reads. */
function prebuildPath(runtime) {
  return path.join(clientDir, 'prebuilds', `${runtime.platform}-${runtime.arch}`, `keyless.abi${runtime.abi}${runtime.libc ? `.${runtime.libc}` : ''}.node`);
}

function findNodeGyp() {
  const candidates = [];
  try {
    candidates.push(require.resolve('node-gyp/bin/node-gyp.js', { paths: [root] }));
  } catch {
    // not a dependency: fall back to the copy bundled with npm
  }
  if (process.env.npm_execpath) {
    candidates.push(path.join(path.dirname(process.env.npm_execpath), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  }
  candidates.push(path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  const found = candidates.find((file) => fs.existsSync(file));
  if (!found) throw new Error(`node-gyp not found (looked in: ${candidates.join(', ')})`);
  return found;
}

// nodedir = the directory holding include/node/node_api.h for that node binary.
function nodeDirFor(nodeBinary) {
  const dir = path.resolve(path.dirname(nodeBinary), '..');
  if (fs.existsSync(path.join(dir, 'include', 'node', 'node_api.h'))) return dir;
  throw new Error(`no headers for ${nodeBinary} (expected ${dir}/include/node/node_api.h)`);
}

function majorOf(nodeBinary) {
  return execFileSync(nodeBinary, ['-p', 'process.versions.node.split(".")[0]'], { encoding: 'utf8' }).trim();
}

function build(nodeBinary, nodeGyp) {
  const major = majorOf(nodeBinary);
  const nodedir = nodeDirFor(nodeBinary);
  const stage = path.join(nativeDir, 'build', `node-${major}`);
  fs.mkdirSync(stage, { recursive: true });
  // gyp resolves paths relative to the .gyp file: point them back at ../../src and ../../build.
  const gyp = fs.readFileSync(path.join(nativeDir, 'binding.gyp'), 'utf8').replace(/"(src|build)\//g, '"../../$1/');
  fs.writeFileSync(path.join(stage, 'binding.gyp'), gyp);
  console.log(`keyless addon: building for node ${major} (nodedir ${nodedir})`);
  execFileSync(process.execPath, [nodeGyp, 'rebuild', `--directory=${stage}`, `--nodedir=${nodedir}`, '--jobs=max', '--loglevel=warn'], {
    stdio: 'inherit',
    env: { ...process.env, npm_config_nodedir: nodedir },
  });
  const output = path.join(stage, 'keyless.node');
  fs.copyFileSync(path.join(stage, 'build', 'Release', 'keyless.node'), output);
  console.log(`keyless addon: ${path.relative(root, output)}`);
  if (inRepository) {
    const prebuild = prebuildPath(runtimeOf(nodeBinary));
    fs.mkdirSync(path.dirname(prebuild), { recursive: true });
    fs.copyFileSync(output, prebuild);
    console.log(`keyless addon: ${path.relative(root, prebuild)}`);
  }
}

// The install script: a matching prebuild means nothing to do; a failed build is not an install
// failure (GatewayClient works without the addon, keyless use says how to build).
function install() {
  if (inRepository) return; // the repository builds every addon in its own `prepare`
  if (fs.existsSync(prebuildPath(runtimeOf(process.execPath)))) return;
  try {
    main([]);
  } catch (error) {
    console.warn(`@hsm-gateway/client: no prebuilt keyless addon for this platform and Node, and building it failed ` +
      `(${error instanceof Error ? error.message : String(error)}). GatewayClient works; keyless TLS needs the addon: ` +
      'install g++, make and python3, then run `npm rebuild @hsm-gateway/client --foreground-scripts`.');
  }
}

function main(argv) {
  generateNativeAlgorithms();
  const targets = [process.execPath];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--all') {
      // The node22/node24 devDependencies; absent in a production install.
      for (const major of ['22', '24']) {
        const binary = path.join(root, 'node_modules', `node${major}`, 'bin', 'node');
        if (fs.existsSync(binary)) targets.push(binary);
        else console.log(`keyless addon: skipping node ${major} (${path.relative(root, binary)} not installed)`);
      }
    } else if (argv[i] === '--node' && argv[i + 1]) {
      targets.push(path.resolve(argv[++i]));
    } else {
      throw new Error(`unknown argument ${argv[i]} (use --all or --node <path>)`);
    }
  }
  const nodeGyp = findNodeGyp();
  const seen = new Set();
  for (const target of targets) {
    const major = majorOf(target);
    if (seen.has(major)) continue;
    seen.add(major);
    build(target, nodeGyp);
  }
}

if (process.argv[2] === '--install') {
  install();
} else try {
  main(process.argv.slice(2));
} catch (error) {
  console.error(`keyless addon build failed: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
}
