// A guest script compiled for the guest: one ES module bundled by esbuild into build/ itself, the
// project's code AND its packages inlined. Started by plain `node`, it spares the TCG guest tsx's
// start (transpiling every file in an emulated CPU) and tsx's WASM lexer, which once crashed there
// ("RuntimeError: memory access out of bounds"); and with the packages inside, Node does not
// resolve and read ~1,500 files of node_modules (grpc, protobufjs, zod's locales...) over 9p in
// the emulated CPU: the device suite's start to its first device open took 1.6-1.8 s on the host
// with packages left to Node (102 ES modules, 1,449 CommonJS loads), 0.7-0.8 s inlined (92 loads).
// Native packages stay outside (node-gyp-build finds the addon from the package root, which
// src/native.ts takes as one directory above the module that holds it: build/ is), and
// `require` is defined for the CommonJS code that calls it at run time. (Not `__dirname`: the etcd
// client, inlined but only run when used, reads its .proto files next to it; no guest uses etcd.)
import { createRequire } from 'node:module';
import { mkdirSync, renameSync } from 'node:fs';
import path from 'node:path';
import { REPO_ROOT } from './run-guest.js';

const bundles = new Map<string, string>();

/** Bundles `entry` (a path relative to the checkout); returns the bundle's path relative to it. */
export async function bundleGuestScript(entry: string): Promise<string> {
  const known = bundles.get(entry);
  if (known) return known;
  const name = entry.replace(/\.ts$/, '').replace(/[^A-Za-z0-9_-]+/g, '-');
  const out = path.join(REPO_ROOT, 'build', `vm-guest-${name}.mjs`);
  const tmp = `${out}.${process.pid}.tmp`;
  mkdirSync(path.dirname(out), { recursive: true });
  const esbuild = createRequire(import.meta.url)('esbuild') as typeof import('esbuild');
  esbuild.buildSync({
    entryPoints: [path.resolve(REPO_ROOT, entry)], outfile: tmp, bundle: true, platform: 'node', format: 'esm', target: 'node20', logLevel: 'error',
    external: ['node-gyp-build', '@node-rs/*', '*.node'],
    banner: { js: "import { createRequire as __guestRequire } from 'node:module'; const require = __guestRequire(import.meta.url);" },
  });
  // Written aside and renamed: a guest never reads a half-written file.
  renameSync(tmp, out);
  const rel = path.relative(REPO_ROOT, out);
  bundles.set(entry, rel);
  return rel;
}
