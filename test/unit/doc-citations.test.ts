// Every document the code and docs cite is in the repository: a comment or page that sends the
// reader to a file the project does not contain (a notes file of the team's, say) is a dead end
// (issue 10 item 18). Checked: names of .md files anywhere in the tracked sources and docs, and
// the relative links of the Markdown pages.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', '..');
const tracked = execFileSync('git', ['ls-files'], { cwd: ROOT, encoding: 'utf8' }).split('\n').filter(Boolean);
const sources = tracked.filter((f) => /\.(ts|mjs|cc|h|sh|md|json|yaml|yml)$/.test(f) && !f.startsWith('test/unit/fixtures/'));
const mdNames = new Set(tracked.filter((f) => f.endsWith('.md')).map((f) => path.basename(f)));

describe('citations', () => {
  it('every .md file named in the sources and docs is one the repository has', () => {
    const missing: string[] = [];
    for (const f of sources) {
      const text = readFileSync(path.join(ROOT, f), 'utf8');
      for (const m of text.matchAll(/\b([A-Za-z0-9_-]+\.md)\b/g)) if (!mdNames.has(m[1]!)) missing.push(`${f}: ${m[1]}`);
    }
    expect(missing).toEqual([]);
  });

  it('every relative link of the Markdown pages leads to a file that exists', () => {
    const broken: string[] = [];
    for (const f of tracked.filter((x) => x.endsWith('.md'))) {
      const text = readFileSync(path.join(ROOT, f), 'utf8');
      for (const m of text.matchAll(/\]\(([^)\s#]+)(#[^)]*)?\)/g)) {
        const target = m[1]!;
        if (/^[a-z]+:/.test(target)) continue; // http(s):, mailto:
        if (!existsSync(path.resolve(ROOT, path.dirname(f), target))) broken.push(`${f}: ${target}`);
      }
    }
    expect(broken).toEqual([]);
  });
});
