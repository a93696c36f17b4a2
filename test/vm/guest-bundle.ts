// A guest script compiled for the guest: one ES module bundled by esbuild into build/ itself
// (src/native.ts finds the package root one directory above the module that holds it, so the
// bundle must sit one level down; the project's code inlined, packages left to Node's resolution from the checkout's
// node_modules, which the guest sees through the shared host root). Started by plain `node`, it
// spares the TCG guest tsx's start (transpiling every file in an emulated CPU) and tsx's WASM
// lexer, which once crashed there ("RuntimeError: memory access out of bounds").
import { renameSync } from 'node:fs';
import path from 'node:path';
import { build } from 'esbuild';
import { REPO_ROOT } from './run-guest.js';

/** Bundles `entry` (a path relative to the checkout); returns the bundle's path relative to it. */
export async function bundleGuestScript(entry: string): Promise<string> {
  const rel = path.join('build', `vm-guest-${path.basename(entry, '.ts')}.mjs`);
  const out = path.join(REPO_ROOT, rel);
  // Written aside and renamed: a guest of another run never starts a half-written file.
  const tmp = `${out}.${process.pid}.tmp`;
  await build({ entryPoints: [path.join(REPO_ROOT, entry)], outfile: tmp, bundle: true, platform: 'node', format: 'esm', target: 'node20', packages: 'external', logLevel: 'error' });
  renameSync(tmp, out);
  return rel;
}
