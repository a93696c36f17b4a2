// Reads just enough SQL for the PostgreSQL continue plugin (issue 12): splits a simple Query's
// string into statements (as the server does: at `;` outside string literals, quoted
// identifiers, dollar quotes and comments) and says what each does to the session: a SET or
// RESET of a setting, DISCARD ALL, SQL-level PREPARE / DEALLOCATE, transaction control, or
// something the plugin cannot rebuild on a new server (temporary objects, LISTEN, session
// advisory locks, set_config(), WITH HOLD cursors, LOAD). Anything else is 'other'. False
// alarms are safe (a connection is reset instead of continued); misses are not, so the scans
// for blockers read the whole statement, not just its first word.
// Grammar: https://www.postgresql.org/docs/current/sql-syntax-lexical.html and the SET, RESET,
// DISCARD, PREPARE, DEALLOCATE pages.

/** One statement: its text as sent (trimmed) and the same with literals and comments blanked. */
export interface SqlStatement {
  text: string;
  /** Lowercased; string literals become '', comments a space, quoted identifiers stay. */
  code: string;
}

export type SessionEffect =
  /** SET [SESSION] <key> ...: replayed verbatim. key: the setting (lowercased). */
  | { kind: 'set'; key: string; text: string }
  | { kind: 'reset'; key: string }
  | { kind: 'reset-all' }
  | { kind: 'discard-all' }
  | { kind: 'prepare'; name: string; text: string }
  | { kind: 'deallocate'; name: string }
  | { kind: 'deallocate-all' }
  | { kind: 'rollback-to' }
  | { kind: 'block'; reason: string }
  | { kind: 'other' };

/** A simple Query or Parse longer than this is not read whole (bytes). */
export const MAX_QUERY_BYTES = 1 << 20;

/** More statements than this in one query string: the caller blocks (bound on work). */
export const MAX_STATEMENTS = 10_000;

/** Splits a query string into its non-empty statements; null past MAX_STATEMENTS. */
export function splitStatements(sql: string): SqlStatement[] | null {
  const out: SqlStatement[] = [];
  let start = 0;
  let code = '';
  let i = 0;
  const n = sql.length;
  const flush = (end: number) => {
    const text = sql.slice(start, end).trim();
    const c = code.trim();
    if (c.length > 0) out.push({ text, code: c.toLowerCase() });
    code = '';
    start = end + 1;
  };
  while (i < n) {
    const ch = sql[i]!;
    const next = sql[i + 1];
    if (ch === ';') {
      flush(i);
      if (out.length > MAX_STATEMENTS) return null;
      i++;
    } else if (ch === '-' && next === '-') {
      const nl = sql.indexOf('\n', i);
      i = nl < 0 ? n : nl + 1;
      code += ' ';
    } else if (ch === '/' && next === '*') {
      // Block comments nest in PostgreSQL.
      let depth = 1;
      i += 2;
      while (i < n && depth > 0) {
        if (sql[i] === '/' && sql[i + 1] === '*') {
          depth++;
          i += 2;
        } else if (sql[i] === '*' && sql[i + 1] === '/') {
          depth--;
          i += 2;
        } else i++;
      }
      code += ' ';
    } else if (ch === "'") {
      // E'...' strings take backslash escapes; standard strings only doubled quotes.
      const escapes = /(^|[^a-z0-9_$])e$/i.test(sql.slice(Math.max(0, i - 2), i));
      i++;
      while (i < n) {
        if (escapes && sql[i] === '\\') i += 2;
        else if (sql[i] === "'" && sql[i + 1] === "'") i += 2;
        else if (sql[i] === "'") break;
        else i++;
      }
      i++;
      code += "''";
    } else if (ch === '"') {
      const from = i;
      i++;
      while (i < n) {
        if (sql[i] === '"' && sql[i + 1] === '"') i += 2;
        else if (sql[i] === '"') break;
        else i++;
      }
      i++;
      code += sql.slice(from, i);
    } else if (ch === '$' && !/[a-z0-9_$]/i.test(sql[i - 1] ?? ' ')) {
      const tag = /^\$([a-z_][a-z0-9_]*)?\$/i.exec(sql.slice(i, i + 66));
      if (tag) {
        const close = sql.indexOf(tag[0], i + tag[0].length);
        i = close < 0 ? n : close + tag[0].length;
        code += "''";
      } else {
        code += ch;
        i++;
      }
    } else {
      code += ch;
      i++;
    }
  }
  flush(n);
  return out.length > MAX_STATEMENTS ? null : out;
}

/** Words of a statement's code: identifiers, quoted identifiers, and single punctuation. */
function words(code: string, max: number): string[] {
  const out: string[] = [];
  const re = /"(?:[^"]|"")*"|[a-z_][a-z0-9_$]*(?:\.[a-z_"][a-z0-9_$"]*)*|\S/g;
  let m: RegExpExecArray | null;
  while (out.length < max && (m = re.exec(code))) out.push(m[0]);
  return out;
}

/** An identifier as the server folds it: quoted ones keep their case (the code is lowercased, so they are taken from the text). */
function identifier(word: string | undefined, text: string): string | null {
  if (!word) return null;
  if (word.startsWith('"')) {
    const m = /"(?:[^"]|"")*"/.exec(text.slice(text.toLowerCase().indexOf(word)));
    return (m ? m[0] : word).slice(1, -1).replace(/""/g, '"');
  }
  return /^[a-z_]/.test(word) ? word : null;
}

const BLOCKERS: [RegExp, string][] = [
  [/\bset_config\s*\(/, 'set_config(): a setting changed through a function is not followed'],
  [/\bpg_(try_)?advisory_lock(_shared)?\s*\(/, 'a session-level advisory lock (not held on a new server)'],
  [/^create\s+(or\s+replace\s+)?((global|local)\s+)?(temp|temporary)\s/, 'a temporary object (it lives only in the dead server\'s session)'],
  [/^create\s+(unlogged\s+)?table\b.*\bon\s+commit\b/, 'a temporary table (ON COMMIT)'],
  [/\binto\s+(temp|temporary)\b/, 'SELECT INTO TEMP: a temporary table'],
  [/^declare\b.*\bwith\s+hold\b/, 'a WITH HOLD cursor (it outlives the transaction on the dead server only)'],
  [/^listen\b/, 'LISTEN: notifications arrive asynchronously and the subscription is not rebuilt'],
  [/^load\b/, 'LOAD: a library loaded into the dead server\'s session'],
  [/^prepare\s+transaction\b/, 'PREPARE TRANSACTION'],
];

/** What one statement does to the session. */
export function sessionEffect(s: SqlStatement): SessionEffect {
  for (const [re, reason] of BLOCKERS) if (re.test(s.code)) return { kind: 'block', reason };
  const w = words(s.code, 8);
  switch (w[0]) {
    case 'set': {
      let k = 1;
      if (w[k] === 'local' || w[k] === 'transaction' || w[k] === 'constraints') return { kind: 'other' }; // ends with the transaction
      if (w[k] === 'session') {
        if (w[k + 1] === 'authorization' || w[k + 1] === 'characteristics') return { kind: 'set', key: `session ${w[k + 1]}`, text: s.text };
        k++;
      }
      const key = settingKey(w, k, s.text);
      return key ? { kind: 'set', key, text: s.text } : { kind: 'block', reason: `SET not understood: ${s.text.slice(0, 80)}` };
    }
    case 'reset': {
      if (w[1] === 'all') return { kind: 'reset-all' };
      if (w[1] === 'session' && w[2] === 'authorization') return { kind: 'reset', key: 'session authorization' };
      const key = settingKey(w, 1, s.text);
      return key ? { kind: 'reset', key } : { kind: 'block', reason: `RESET not understood: ${s.text.slice(0, 80)}` };
    }
    case 'discard':
      return w[1] === 'all' ? { kind: 'discard-all' } : { kind: 'other' };
    case 'prepare': {
      const name = identifier(w[1], s.text);
      return name ? { kind: 'prepare', name, text: s.text } : { kind: 'block', reason: `PREPARE not understood: ${s.text.slice(0, 80)}` };
    }
    case 'deallocate': {
      const k = w[1] === 'prepare' ? 2 : 1;
      if (w[k] === 'all') return { kind: 'deallocate-all' };
      const name = identifier(w[k], s.text);
      return name ? { kind: 'deallocate', name } : { kind: 'block', reason: `DEALLOCATE not understood: ${s.text.slice(0, 80)}` };
    }
    case 'rollback':
    case 'abort': {
      const k = w[1] === 'work' || w[1] === 'transaction' ? 2 : 1;
      return w[k] === 'to' ? { kind: 'rollback-to' } : { kind: 'other' };
    }
    default:
      return { kind: 'other' };
  }
}

/** The setting a SET/RESET names, from word k on (the grammar's special forms mapped to their GUC). */
function settingKey(w: string[], k: number, text: string): string | null {
  const a = w[k];
  if (a === 'time' && w[k + 1] === 'zone') return 'timezone';
  if (a === 'names') return 'client_encoding';
  if (a === 'schema') return 'search_path';
  if (a === 'xml' && w[k + 1] === 'option') return 'xmloption';
  if (a === 'role') return 'role';
  return identifier(a, text);
}
