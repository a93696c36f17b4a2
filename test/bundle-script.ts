// A TypeScript script that tests start as a child process many times, compiled once into one ES
// module by esbuild (the project's code inlined, packages left to Node's resolution from the
// checkout's node_modules), so that each start is plain `node`: through tsx a start costs its
// loader and a transform-cache lookup for every source file (~0.3-1 s more per start on 2 cores).
// The bundle sits in build/ (src/native.ts finds the package root one directory above the module
// that holds it, so the bundle must sit one level down), as test/vm/guest-bundle.ts does.
import { renameSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');

/** Bundles `entry` (a path relative to the checkout) into build/; returns the bundle's absolute path. */
export async function bundleScript(entry: string): Promise<string> {
  const out = path.join(ROOT, 'build', `test-${path.basename(entry, '.ts')}.mjs`);
  // Written aside and renamed: a process of another run never starts a half-written file.
  const tmp = `${out}.${process.pid}.tmp`;
  await build({ entryPoints: [path.join(ROOT, entry)], outfile: tmp, bundle: true, platform: 'node', format: 'esm', target: 'node20', packages: 'external', logLevel: 'error' });
  renameSync(tmp, out);
  return out;
}
