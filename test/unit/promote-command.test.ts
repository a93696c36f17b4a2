// The promote command of a takeover's `continue` section: its outcomes (exit 0, a failure with
// its stderr, a missing program, a hang past its timeout). The section itself: agent-config.test.ts.
import { describe, expect, it } from 'vitest';
import { runPromote } from '../../src/agent/continue-setup.js';

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
