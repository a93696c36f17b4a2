// The docs' examples are code that compiles against the code: every ```ts block in README.md and
// docs/*.md that imports from 'takeover' is a whole module, type-checked here (strict, as the
// project) against the sources. A renamed option, a wrong field or a missing import fails it.
// (Blocks that only list signatures import nothing and are not checked.)
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { afterAll, describe, expect, it } from 'vitest';

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const DOCS = ['README.md', ...readdirSync(path.join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).map((f) => path.join('docs', f))];

/** The ```ts blocks of a markdown file that import from the package, with their line numbers. */
function examples(file: string): Array<{ line: number; code: string }> {
  const out: Array<{ line: number; code: string }> = [];
  const lines = readFileSync(path.join(ROOT, file), 'utf8').split('\n');
  for (let i = 0; i < lines.length; i++) {
    if (lines[i]!.trim() !== '```ts') continue;
    const start = i + 1;
    let end = start;
    while (end < lines.length && lines[end]!.trim() !== '```') end++;
    const code = lines.slice(start, end).join('\n');
    if (/from 'takeover(\/pg)?'/.test(code)) out.push({ line: start + 1, code });
    i = end;
  }
  return out;
}

const dir = mkdtempSync(path.join(tmpdir(), 'tko-doc-examples-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('the docs\' examples type-check against the sources', () => {
  const all = DOCS.flatMap((file) => examples(file).map((e) => ({ ...e, file })));

  it('there are examples to check in README.md, docs/AGENT.md, docs/API.md and docs/CLUSTER.md', () => {
    expect(new Set(all.map((e) => e.file))).toEqual(new Set(['README.md', 'docs/AGENT.md', 'docs/API.md', 'docs/CLUSTER.md']));
  });

  it('each one compiles (strict), importing takeover and takeover/pg as the package exports them', () => {
    const files = all.map((e, i) => {
      // .mts: an ES module whatever package.json says, so top-level await is allowed.
      const f = path.join(dir, `${e.file.replace(/[/.]/g, '_')}_${e.line}_${i}.mts`);
      writeFileSync(f, e.code);
      return { ...e, f };
    });
    const { config } = ts.readConfigFile(path.join(ROOT, 'tsconfig.json'), ts.sys.readFile);
    const { options } = ts.parseJsonConfigFileContent(config, ts.sys, ROOT);
    const program = ts.createProgram(files.map((f) => f.f), {
      ...options,
      noEmit: true,
      declaration: false,
      rootDir: undefined,
      paths: { takeover: [path.join(ROOT, 'src', 'index.ts')], 'takeover/pg': [path.join(ROOT, 'src', 'adapters', 'pg-pool.ts')] },
    });
    // The examples' own diagnostics (and the options' and global ones): the sources they import
    // are checked as far as the examples use them; the sources' own bodies are the build's to check
    // (tsc, in the setup), and checking all of them here took ~12 s more.
    const examplesDiagnostics = files.flatMap((f) => {
      const sf = program.getSourceFile(f.f);
      return [...program.getSyntacticDiagnostics(sf), ...program.getSemanticDiagnostics(sf)];
    });
    const errors = [...program.getOptionsDiagnostics(), ...program.getGlobalDiagnostics(), ...examplesDiagnostics].map((d) => {
      const at = files.find((f) => f.f === d.file?.fileName);
      const line = d.file && d.start !== undefined ? d.file.getLineAndCharacterOfPosition(d.start).line : 0;
      return `${at ? `${at.file}:${at.line + line}` : (d.file?.fileName ?? '')}: ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`;
    });
    expect(errors).toEqual([]);
  }, 120_000);
});
