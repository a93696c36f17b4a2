// A guest script compiled for the guest: one ES module bundled by esbuild into build/ itself
// (src/lab/node-child.ts bundledScript: the project's code inlined, packages left to Node's
// resolution from the checkout's node_modules, which the guest sees through the shared host
// root). Started by plain `node`, it spares the TCG guest tsx's start (transpiling every file in
// an emulated CPU) and tsx's WASM lexer, which once crashed there ("RuntimeError: memory access
// out of bounds").
import path from 'node:path';
import { bundledScript } from '../../src/lab/node-child.js';
import { REPO_ROOT } from './run-guest.js';

/** Bundles `entry` (a path relative to the checkout); returns the bundle's path relative to it. */
export async function bundleGuestScript(entry: string): Promise<string> {
  return path.relative(REPO_ROOT, bundledScript(entry, 'vm-guest-'));
}
