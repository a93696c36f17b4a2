// `npm run prebuild` (prebuildify --napi --strip) makes a prebuild that the package loads on a
// machine without a compiler: the install script (node-gyp-build) finds it and builds nothing.
import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const work = mkdtempSync(path.join(tmpdir(), 'tko-prebuild-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('prebuilds', () => {
  it('prebuildify makes an N-API prebuild that installs and loads with no toolchain on PATH', () => {
    // Build the prebuild from a copy of the sources, so the work tree's build/ is untouched.
    const src = path.join(work, 'src');
    for (const p of ['package.json', 'binding.gyp', 'native']) cpSync(path.join(root, p), path.join(src, p), { recursive: true });
    symlinkSync(path.join(root, 'node_modules'), path.join(src, 'node_modules'));
    // JOBS: node-gyp's make on every core (the build is most of this test's time).
    execFileSync(path.join(root, 'node_modules', '.bin', 'prebuildify'), ['--napi', '--strip'], { cwd: src, stdio: 'pipe', env: { ...process.env, JOBS: 'max' } });
    const built = readdirSync(path.join(src, 'prebuilds', `linux-${process.arch}`));
    expect(built.some((f) => f.endsWith('.node'))).toBe(true);

    // A package as npm would unpack it: no native sources, no build/, only the prebuild.
    const pkg = path.join(work, 'pkg');
    for (const p of ['package.json', 'dist']) cpSync(path.join(root, p), path.join(pkg, p), { recursive: true });
    cpSync(path.join(src, 'prebuilds'), path.join(pkg, 'prebuilds'), { recursive: true });
    symlinkSync(path.join(root, 'node_modules'), path.join(pkg, 'node_modules'));
    // PATH with node and the package's bin scripts only: no make, no g++, no python.
    const bin = path.join(work, 'bin');
    mkdirSync(bin);
    symlinkSync(process.execPath, path.join(bin, 'node'));
    const env = { PATH: `${path.join(pkg, 'node_modules', '.bin')}:${bin}`, HOME: work };
    for (const tool of ['g++', 'make', 'cc', 'python3']) {
      expect(spawnSync('sh', ['-c', `command -v ${tool}`], { env }).status).not.toBe(0);
    }
    const install = spawnSync(process.execPath, [path.join(pkg, 'node_modules', 'node-gyp-build', 'bin.js')], { cwd: pkg, env, encoding: 'utf8' });
    expect(install.status, install.stderr).toBe(0);
    expect(existsSync(path.join(pkg, 'build'))).toBe(false);
    const load = spawnSync(
      process.execPath,
      ['-e', "console.log(require('node-gyp-build').resolve('.')); import('./dist/index.js').then((m) => console.log(typeof m.FlowTracker, typeof m.closeRemotePeers))"],
      { cwd: pkg, env, encoding: 'utf8' },
    );
    expect(load.status, load.stderr).toBe(0);
    expect(load.stdout).toContain(path.join(pkg, 'prebuilds', `linux-${process.arch}`));
    expect(load.stdout).toContain('function function');
  }, 180_000);
});
