// A takeover's `continue` section: parsed with its defaults, mistakes named by their field; the
// promote command's outcomes (exit 0, a failure with its stderr, a hang past its timeout).
import { describe, expect, it } from 'vitest';
import { ConfigError, validateConfig } from '../../src/agent/config.js';
import { runPromote } from '../../src/agent/continue-setup.js';

const withContinue = (c: Record<string, unknown> | undefined) => ({
  cluster: 'c1',
  node: 'b',
  database: 'db',
  key: '0123456789abcdef',
  heartbeat: { links: [{ id: 0, address: '10.0.0.2', port: 7400 }] },
  peers: [{
    node: 'a',
    links: [{ id: 0, address: '10.0.0.1', port: 7400 }],
    takeover: { address: '10.0.0.100', port: 6379, interface: 'eth0', prefixLength: 24, ...(c ? { continue: c } : {}) },
  }],
  notify: { port: 7500 },
});

function fieldOf(doc: unknown): string {
  try {
    validateConfig(doc, 'f');
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return `${(err as ConfigError).field}: ${(err as Error).message}`;
  }
  throw new Error('accepted');
}

describe('takeover.continue in the config', () => {
  it('parses with its defaults (upstream on 127.0.0.1, 5 s to promote); absent, there is none', () => {
    const c = validateConfig(withContinue({ protocol: 'resp', mirror: 'mir0', upstream: { port: 6380 }, promote: ['redis-cli', 'REPLICAOF', 'NO', 'ONE'] }));
    expect(c.peers[0]!.takeover[0]!.continue).toEqual({ protocol: 'resp', mirror: 'mir0', upstream: { host: '127.0.0.1', port: 6380 }, promote: ['redis-cli', 'REPLICAOF', 'NO', 'ONE'], promoteTimeoutMs: 5000 });
    expect(validateConfig(withContinue(undefined)).peers[0]!.takeover[0]!.continue).toBeUndefined();
  });

  it.each([
    [{ protocol: 'http', mirror: 'mir0', upstream: { port: 1 } }, /peers\[0\]\.takeover\.continue\.protocol/],
    [{ protocol: 'resp', upstream: { port: 1 } }, /peers\[0\]\.takeover\.continue\.mirror/],
    [{ protocol: 'resp', mirror: 'mir0' }, /peers\[0\]\.takeover\.continue\.upstream/],
    [{ protocol: 'resp', mirror: 'mir0', upstream: { port: 0 } }, /continue\.upstream\.port/],
    [{ protocol: 'resp', mirror: 'mir0', upstream: { host: 'localhost', port: 1 } }, /continue\.upstream\.host/],
    [{ protocol: 'resp', mirror: 'mir0', upstream: { port: 1 }, promote: [] }, /continue\.promote/],
    [{ protocol: 'resp', mirror: 'mir0', upstream: { port: 1 }, promoteTimeoutMs: 10 }, /continue\.promoteTimeoutMs/],
    [{ protocol: 'resp', mirror: 'mir0', upstream: { port: 1 }, extra: 1 }, /continue/],
  ])('refuses %j, naming the field', (c, field) => {
    expect(fieldOf(withContinue(c))).toMatch(field);
  });
});

describe('runPromote', () => {
  it('resolves when the command exits 0', async () => {
    await expect(runPromote(['true'], 5000)).resolves.toBeUndefined();
  });

  it('rejects with the exit code and the end of stderr', async () => {
    await expect(runPromote(['sh', '-c', 'echo first >&2; echo "READONLY no" >&2; exit 3'], 5000)).rejects.toThrow(/"sh -c .*" exited with 3: first \| READONLY no/);
  });

  it('rejects a command that does not exist, and one that hangs past its timeout (killed)', async () => {
    await expect(runPromote(['/nonexistent/promote'], 5000)).rejects.toThrow(/ENOENT/);
    const t0 = performance.now();
    await expect(runPromote(['sleep', '5'], 200)).rejects.toThrow(/did not finish in 200 ms/);
    expect(performance.now() - t0).toBeLessThan(2000);
  });
});
