// `npm run demo` as the README gives it: the CLI as a process, on a learning bridge, with real
// agents; the backup releases both clients from its replicated copy of the server's connections.
import { describe, expect, it } from 'vitest';
import { runCli } from '../cli-process.js';

describe('takeover demo', () => {
  it.each([
    ['rst', 'ECONNRESET', 'reset'],
    ['fin', undefined, 'closed'],
  ])('--method %s: both clients released from the backup\'s copy, exit 0', async (method, code, outcome) => {
    const r = await runCli(['demo', '--method', method, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout.slice(r.stdout.indexOf('{')));
    expect(out.replicated).toBe(2);
    expect(out.results).toHaveLength(2);
    for (const res of out.results) expect(res).toMatchObject({ seqSource: 'tracked', outcome, ok: true });
    for (const c of out.clients) expect(c).toMatchObject(code ? { event: 'error', code } : { event: 'end' });
    // Released within the detection bound (3 intervals of 100 ms and the 25 ms skew after the
    // last heartbeat) + 50 ms.
    for (const c of out.clients) expect(c.atMs).toBeLessThan(325 + 50 + 100);
  }, 60_000);
});
