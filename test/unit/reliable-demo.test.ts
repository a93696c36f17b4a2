// The order-matching demo (docs/examples/order-matching/demo.ts) runs as documented: its primary
// killed mid-load, the takeover, every order applied exactly once, exit 0.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const DEMO = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'docs', 'examples', 'order-matching', 'demo.ts');

describe('order-matching demo', () => {
  it('runs: kill, takeover, every order once', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', DEMO, '200'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const code = await new Promise<number | null>((r) => child.once('exit', r));
    expect(out).toContain('every order applied exactly once');
    expect(out).toMatch(/takeover: \d+ records replayed/);
    expect(code).toBe(0);
  }, 30_000);
});
