// .ci/setup.sh builds the addon and dist/ again when their sources changed after them (a pull, a
// branch switch), and only then. Run on a copy of the checkout in a temporary directory, with
// npx, npm and apt-get replaced by stubs that record their calls: nothing is built or installed.
import { spawnSync } from 'node:child_process';
import { chmodSync, cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const work = mkdtempSync(path.join(tmpdir(), 'tko-ci-setup-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const copy = path.join(work, 'checkout');
const stubs = path.join(work, 'bin');
const calls = path.join(work, 'calls.log');
const OLD = new Date('2020-01-01T00:00:00Z'); // the sources, as checked out
const BUILT = new Date('2021-01-01T00:00:00Z'); // the outputs, built after them
const LATER = new Date('2022-01-01T00:00:00Z'); // an edit after the build

const at = (rel: string, when: Date) => utimesSync(path.join(copy, rel), when, when);
const put = (rel: string, when: Date) => {
  mkdirSync(path.dirname(path.join(copy, rel)), { recursive: true });
  writeFileSync(path.join(copy, rel), 'not a real build output\n');
  at(rel, when);
};
const prebuildDir = `prebuilds/linux-${process.arch}`;

function setup() {
  writeFileSync(calls, '');
  const r = spawnSync('bash', [path.join(copy, '.ci', 'setup.sh')], { env: { ...process.env, PATH: `${stubs}:${process.env.PATH}` }, encoding: 'utf8' });
  return { status: r.status, out: r.stdout, err: r.stderr, calls: readFileSync(calls, 'utf8').trim().split('\n').filter(Boolean) };
}

beforeEach(() => {
  rmSync(copy, { recursive: true, force: true });
  for (const p of ['.ci', 'binding.gyp', 'native', 'src', 'package.json', 'package-lock.json', 'tsconfig.json', 'tsconfig.build.json']) {
    cpSync(path.join(root, p), path.join(copy, p), { recursive: true });
  }
  // The VM tests' own installer is not what is tested here.
  mkdirSync(path.join(copy, 'test', 'vm'), { recursive: true });
  writeFileSync(path.join(copy, 'test', 'vm', 'setup-deps.sh'), 'exit 0\n');
  // node_modules as installed: what setup.sh reads of it (node-gyp-build decides which addon
  // loads; node-addon-api's headers are an input of the addon; npm's record of the install).
  mkdirSync(path.join(copy, 'node_modules', 'node-addon-api'), { recursive: true });
  symlinkSync(path.join(root, 'node_modules', 'node-gyp-build'), path.join(copy, 'node_modules', 'node-gyp-build'));
  cpSync(path.join(root, 'node_modules', 'node-addon-api', 'package.json'), path.join(copy, 'node_modules', 'node-addon-api', 'package.json'));
  writeFileSync(path.join(copy, 'node_modules', '.package-lock.json'), '{}\n');
  spawnSync('find', [copy, '-exec', 'touch', '-h', '-d', OLD.toISOString(), '{}', '+']);
  put('build/Release/takeover.node', BUILT);
  put('dist/cli/main.js', BUILT);
  mkdirSync(stubs, { recursive: true });
  for (const tool of ['npx', 'npm', 'apt-get']) {
    writeFileSync(path.join(stubs, tool), `#!/bin/sh\necho "${tool} $*" >> '${calls}'\n`);
    chmodSync(path.join(stubs, tool), 0o755);
  }
});

describe('.ci/setup.sh rebuilds what is stale, and only that', () => {
  it('builds nothing when the addon and dist/ are newer than their sources', () => {
    const r = setup();
    expect(r.status, r.err).toBe(0);
    expect(r.calls).toEqual([]);
  });

  it.each(['native/forge.cc', 'native/errors.h', 'binding.gyp', 'node_modules/node-addon-api/package.json'])('rebuilds the addon when %s changed after it', (source) => {
    at(source, LATER);
    const r = setup();
    expect(r.status, r.err).toBe(0);
    expect(r.calls).toEqual(['npx node-gyp rebuild']);
    expect(r.out).toContain(`building the addon: ${source} is newer than ${path.join(copy, 'build', 'Release', 'takeover.node')}`);
  });

  it('does not rebuild the addon for the fuzzer\'s or the sanitizer\'s own files (separate builds)', () => {
    spawnSync('find', [path.join(copy, 'native', 'fuzz'), path.join(copy, 'native', 'sanitize'), '-exec', 'touch', '-d', LATER.toISOString(), '{}', '+']);
    expect(setup().calls).toEqual([]);
  });

  it('builds the addon when none loads here: no build, no prebuild for this platform', () => {
    rmSync(path.join(copy, 'build'), { recursive: true });
    put(`prebuilds/linux-${process.arch === 'arm64' ? 'x64' : 'arm64'}/takeover.napi.node`, BUILT);
    const r = setup();
    expect(r.calls).toEqual(['npx node-gyp rebuild']);
    expect(r.out).toContain('building the addon: no addon for this machine in build/Release or prebuilds/');
  });

  it('judges the prebuild when it is what loads: kept while newer than the sources, rebuilt after an edit', () => {
    rmSync(path.join(copy, 'build'), { recursive: true });
    put(`${prebuildDir}/takeover.napi.node`, BUILT);
    expect(setup().calls).toEqual([]);
    at('native/sockdiag.cc', LATER);
    expect(setup().calls).toEqual(['npx node-gyp rebuild']);
  });

  it('rebuilds dist/ (only) when a source or a tsconfig changed after it', () => {
    at('src/event-loop.ts', LATER);
    expect(setup().calls).toEqual(['npx tsc -p tsconfig.build.json']);
    at('src/event-loop.ts', OLD);
    at('tsconfig.build.json', LATER);
    expect(setup().calls).toEqual(['npx tsc -p tsconfig.build.json']);
  });

  it('a missing input stops the setup instead of reading as up to date', () => {
    rmSync(path.join(copy, 'binding.gyp'));
    const r = setup();
    expect(r.status).toBe(2);
    expect(r.err).toContain('needs-build: no such input: binding.gyp');
    expect(r.calls).toEqual([]);
  });
});
