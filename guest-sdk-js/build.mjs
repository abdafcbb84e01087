#!/usr/bin/env node
// Builds a JavaScript or TypeScript workflow into a weft component:
//
//   node build.mjs <app.js|app.ts> -o <out.wasm> [--class <Name>]
//
// esbuild strips the types and bundles the module with this SDK into one
// ES module (`cloudflare:workers` and `cloudflare:workflows` resolve to the
// SDK); componentize-js builds that into a component of the world
// `weft:workflow/workflow-sync`. `weft build` runs this script.

import { rmSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const sdk = dirname(fileURLToPath(import.meta.url));

function usage(message) {
  if (message) console.error(`weft-js-build: ${message}`);
  console.error('usage: build.mjs <app.js|app.ts> -o <out.wasm> [--class <Name>] [--wizer <weft>] [--bundle-only]');
  process.exit(2);
}

const args = process.argv.slice(2);
let source, output, className, wizer, bundleOnly = false;
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (a === '-o' || a === '--output') output = args[++i];
  else if (a === '--class') className = args[++i];
  else if (a === '--wizer') wizer = args[++i];
  else if (a === '--bundle-only') bundleOnly = true;
  else if (a.startsWith('-')) usage(`unknown option ${a}`);
  else if (source === undefined) source = a;
  else usage(`unexpected argument ${a}`);
}
if (source === undefined || output === undefined) usage();

async function load(name) {
  try {
    return await import(name);
  } catch (e) {
    console.error(
      `weft-js-build: cannot load ${name} (${e.code ?? e.message}); install the SDK's packages with \`npm ci\` in ${sdk}`,
    );
    process.exit(3);
  }
}

const esbuild = await load('esbuild');
const { componentize } = await load('@bytecodealliance/componentize-js');

const path = resolve(source);
output = resolve(output);
const entry = [
  `import * as workflow from ${JSON.stringify(path)};`,
  `import { makeRun } from ${JSON.stringify(join(sdk, 'src/entry.js'))};`,
  `export const run = makeRun(workflow, ${className === undefined ? 'undefined' : JSON.stringify(className)});`,
].join('\n');

const cloudflare = {
  name: 'cloudflare-modules',
  setup(build) {
    build.onResolve({ filter: /^cloudflare:(workers|workflows)$/ }, (a) => ({
      path: join(sdk, 'src', a.path === 'cloudflare:workers' ? 'workers.js' : 'workflows.js'),
    }));
    build.onResolve({ filter: /^@weft\/sdk$/ }, () => ({ path: join(sdk, 'src/index.js') }));
    build.onResolve({ filter: /^weft:/ }, (a) => ({ path: a.path, external: true }));
  },
};

let bundled;
try {
  bundled = await esbuild.build({
    stdin: { contents: entry, resolveDir: dirname(path), sourcefile: 'weft-entry.js', loader: 'js' },
    // The bundle names its files relative to this (in comments): the
    // module's directory, not wherever `weft build` was run.
    absWorkingDir: dirname(path),
    bundle: true,
    write: false,
    format: 'esm',
    platform: 'neutral',
    target: 'es2022',
    mainFields: ['module', 'main'],
    conditions: ['workerd', 'worker', 'import'],
    plugins: [cloudflare],
    logLevel: 'silent',
    charset: 'utf8',
    legalComments: 'none',
  });
} catch (e) {
  for (const m of e.errors ?? []) {
    const where = m.location ? `${m.location.file}:${m.location.line}:${m.location.column}: ` : '';
    console.error(`weft-js-build: ${where}${m.text}`);
  }
  if (!e.errors) console.error(`weft-js-build: ${e.message}`);
  process.exit(1);
}
const js = bundled.outputFiles[0].text;
if (bundleOnly) {
  writeFileSync(output, js);
  process.exit(0);
}

// A reproducible build: componentize-js works in `<tmp>/<12 hex digits>`
// from Math.random, and that path ends up in the component (in stack
// traces); `weft` pre-initializes the engine with fixed randomness and
// clocks (`--wizer`, which `weft build` passes). So the work directory is
// named after the bundle instead, in /tmp.
const digest = createHash('sha256').update(js).update(className ?? '').digest();
let draw = 0;
const realRandom = Math.random;
Math.random = () => digest[draw++ % digest.length] / 256 + digest[(draw + 7) % digest.length] / 65536;
process.env.TMPDIR = '/tmp';
const workDir = `/tmp/${createHash('sha256').update(Math.random().toString()).digest('hex').slice(0, 12)}`;
// componentize-js strips the working directory from the source's path when
// it is a prefix of it, and mangles the path when that directory is `/tmp`
// or `/`: work from the SDK's directory.
process.chdir(sdk);
draw = 0;
rmSync(workDir, { recursive: true, force: true });

try {
  const { component } = await componentize(js, {
    sourceName: 'workflow.js',
    witPath: join(sdk, 'wit'),
    worldName: 'workflow-sync',
    disableFeatures: ['http', 'fetch-event'],
    ...(wizer === undefined ? {} : { wizerBin: wizer, env: { WEFT_WIZER: '1' } }),
  });
  Math.random = realRandom;
  writeFileSync(output, component);
} catch (e) {
  console.error(`weft-js-build: componentize-js failed: ${e.message ?? e}`);
  process.exit(1);
} finally {
  rmSync(workDir, { recursive: true, force: true });
}
