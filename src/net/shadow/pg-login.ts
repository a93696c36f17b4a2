// Logs a continued PostgreSQL session into its new upstream (issue 12), as the relay's preamble
// dialog: the client's own StartupMessage (same user, database, options), then whatever
// authentication the upstream asks for, answered with the password the plugin was given (the
// client's own answers cannot be replayed: MD5 salts and SCRAM nonces differ per login). Then
// the session state (SET statements, prepared statements), each answered before the relay sends
// the client's requests. Supported: trust, cleartext password, MD5, SCRAM-SHA-256 (without
// channel binding: the connection is not TLS). Not: GSSAPI, SSPI, SCRAM-SHA-256-PLUS, certificates;
// the password is used as UTF-8 without SASLprep (ASCII passwords are unaffected).
// Sources: https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-START-UP,
// https://www.postgresql.org/docs/current/sasl-authentication.html, RFC 5802 (SCRAM), RFC 7677.
import { createHash, createHmac, pbkdf2Sync, randomBytes, timingSafeEqual } from 'node:crypto';
import { cstr, int32, PgBodyReader, pgErrorFields, PgMessageFramer, pgMessage, type PgMessage } from '../pg-framer.js';
import type { PreambleDialog } from './exchange-tracker.js';

/** What the dialog needs: the startup packet and the session to rebuild, with their replies. */
export interface PgLoginPlan {
  /** The client's StartupMessage, whole (untyped: length, protocol, parameters). */
  startup: Buffer;
  /** The login user (the StartupMessage's `user`): MD5 salts the password with it. */
  user: string;
  /** The password for the upstream's authentication, if it asks for one. */
  password: string | undefined;
  /** Sent after the login's ReadyForQuery: queries and Parse+Sync units, each ending in one ReadyForQuery. */
  session: Buffer;
  /** How many ReadyForQuery the session bytes draw. */
  sessionReplies: number;
}

/** Most authentication round trips a login may take (SCRAM takes 3). */
const MAX_AUTH_STEPS = 8;

type Phase = 'auth' | 'startup' | 'session';

class PgLoginDialog implements PreambleDialog {
  private readonly framer = new PgMessageFramer({ typed: true, keep: (t) => (t === 'R' || t === 'E' || t === 'Z' ? 8192 : 0) });
  private phase: Phase = 'auth';
  private steps = 0;
  /** The SCRAM exchange in progress: our nonce, client-first-message-bare, the server signature to expect. */
  private scram: { nonce: string; firstBare: string; expect?: Buffer; verified: boolean } | null = null;
  private left: number;

  constructor(private readonly plan: PgLoginPlan) {
    this.left = plan.sessionReplies;
  }

  start(): Buffer {
    return this.plan.startup;
  }

  push(chunk: Uint8Array): ReturnType<PreambleDialog['push']> {
    const before = this.framer.offset;
    const out: Buffer[] = [];
    let doneAt = -1;
    let failure: string | null = null;
    this.framer.push(chunk, (m) => {
      try {
        if (this.onMessage(m, out) === 'more') return false;
        doneAt = m.end;
      } catch (err) {
        failure = (err as Error).message;
      }
      return true;
    });
    if (failure !== null) return { kind: 'failed', reason: failure };
    if (this.framer.broken) return { kind: 'failed', reason: `upstream stream not PostgreSQL: ${this.framer.broken}` };
    if (doneAt >= 0) return { kind: 'done', rest: Buffer.from(chunk.subarray(doneAt - before)) };
    return { kind: 'more', send: Buffer.concat(out) };
  }

  /** One upstream message; 'done' after the preamble's last ReadyForQuery. Throws Error to fail. */
  private onMessage(m: PgMessage, out: Buffer[]): 'done' | 'more' {
    if (m.type === 'E') {
      const text = errorText(m.body);
      throw new Error(this.phase === 'session' ? `session state refused: ${text}` : `login refused: ${text}`);
    }
    if (m.type === 'N' || m.type === 'S' || m.type === 'K') return 'more';
    if (this.phase === 'auth') {
      if (m.type === 'v') throw new Error('the upstream asked to negotiate the protocol version (NegotiateProtocolVersion)');
      if (m.type !== 'R') throw new Error(`unexpected '${m.type}' message during authentication`);
      if (++this.steps > MAX_AUTH_STEPS) throw new Error(`more than ${MAX_AUTH_STEPS} authentication steps`);
      const r = new PgBodyReader(m.body);
      const code = r.int32();
      if (code === 0) {
        this.phase = 'startup';
        if (this.scram && !this.scram.verified) throw new Error('SCRAM: AuthenticationOk without the server\'s signature');
        return 'more';
      }
      out.push(this.answer(code, r));
      return 'more';
    }
    if (m.type !== 'Z') {
      if (this.phase === 'startup') throw new Error(`unexpected '${m.type}' message before the login's ReadyForQuery`);
      return 'more'; // CommandComplete, ParseComplete and the like: swallowed
    }
    if (this.phase === 'startup') {
      this.phase = 'session';
      if (this.left === 0) return 'done';
      out.push(this.plan.session);
      return 'more';
    }
    return --this.left === 0 ? 'done' : 'more';
  }

  /** The PasswordMessage / SASL answer to authentication request `code`. */
  private answer(code: number, r: PgBodyReader): Buffer {
    const password = () => {
      if (this.plan.password === undefined) throw new Error(`the upstream asks for a password (authentication ${authName(code)}); give pgContinue({ password })`);
      return this.plan.password;
    };
    switch (code) {
      case 3: // AuthenticationCleartextPassword
        return pgMessage('p', cstr(password()));
      case 5: { // AuthenticationMD5Password: 'md5' + md5hex(md5hex(password + user) + salt)
        const salt = r.bytes(4);
        const inner = md5hex(Buffer.from(password() + this.plan.user, 'utf8'));
        return pgMessage('p', cstr('md5' + md5hex(Buffer.concat([Buffer.from(inner), salt]))));
      }
      case 10: { // AuthenticationSASL: a list of mechanisms
        const mechanisms: string[] = [];
        for (let i = 0; i < 16 && r.rest > 1; i++) mechanisms.push(r.cstring());
        if (!mechanisms.includes('SCRAM-SHA-256')) throw new Error(`SASL mechanisms not supported: ${mechanisms.join(', ')}`);
        password();
        const nonce = randomBytes(18).toString('base64');
        // PostgreSQL takes the user from the StartupMessage; the SCRAM user name is left empty.
        const firstBare = `n=,r=${nonce}`;
        this.scram = { nonce, firstBare, verified: false };
        const first = Buffer.from(`n,,${firstBare}`);
        return pgMessage('p', cstr('SCRAM-SHA-256'), int32(first.length), first);
      }
      case 11: { // AuthenticationSASLContinue: server-first-message
        if (!this.scram) throw new Error('SASLContinue without a SASL exchange');
        const serverFirst = r.bytes(r.rest).toString('utf8');
        const attrs = scramAttributes(serverFirst);
        const nonce = attrs.get('r');
        const salt = attrs.get('s');
        const iterations = Number(attrs.get('i'));
        if (!nonce?.startsWith(this.scram.nonce) || !salt || !Number.isInteger(iterations) || iterations < 1 || iterations > 10_000_000) {
          throw new Error(`SCRAM: server-first-message not acceptable: ${serverFirst.slice(0, 120)}`);
        }
        const salted = pbkdf2Sync(password(), Buffer.from(salt, 'base64'), iterations, 32, 'sha256');
        const clientKey = hmac(salted, 'Client Key');
        const storedKey = createHash('sha256').update(clientKey).digest();
        const withoutProof = `c=biws,r=${nonce}`;
        const authMessage = `${this.scram.firstBare},${serverFirst},${withoutProof}`;
        const signature = hmac(storedKey, authMessage);
        const proof = Buffer.alloc(32);
        for (let i = 0; i < 32; i++) proof[i] = clientKey[i]! ^ signature[i]!;
        this.scram.expect = hmac(hmac(salted, 'Server Key'), authMessage);
        return pgMessage('p', `${withoutProof},p=${proof.toString('base64')}`);
      }
      case 12: { // AuthenticationSASLFinal: the server proves it knew the password too
        const expect = this.scram?.expect;
        const v = scramAttributes(r.bytes(r.rest).toString('utf8')).get('v');
        const got = v ? Buffer.from(v, 'base64') : Buffer.alloc(0);
        if (!expect || got.length !== expect.length || !timingSafeEqual(got, expect)) throw new Error('SCRAM: the server\'s signature does not match');
        this.scram!.verified = true;
        return Buffer.alloc(0);
      }
      default:
        throw new Error(`authentication ${authName(code)} is not supported (trust, password, md5, SCRAM-SHA-256 are)`);
    }
  }
}

function md5hex(b: Buffer): string {
  return createHash('md5').update(b).digest('hex');
}

function hmac(key: Buffer, data: string): Buffer {
  return createHmac('sha256', key).update(data).digest();
}

function scramAttributes(message: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const part of message.split(',')) {
    const eq = part.indexOf('=');
    if (eq === 1) m.set(part[0]!, part.slice(2));
  }
  return m;
}

function authName(code: number): string {
  const names: Record<number, string> = { 2: 'KerberosV5', 3: 'CleartextPassword', 5: 'MD5Password', 7: 'GSS', 8: 'GSSContinue', 9: 'SSPI', 10: 'SASL', 11: 'SASLContinue', 12: 'SASLFinal' };
  return `${names[code] ?? 'unknown'} (${code})`;
}

/** An ErrorResponse's severity, code and message, for the log. */
export function errorText(body: Buffer): string {
  const fields = pgErrorFields(body);
  return `${fields.get('S') ?? 'ERROR'} ${fields.get('C') ?? '?'}: ${fields.get('M') ?? ''}`.trim();
}

/** The dialog for one relay. */
export function pgLoginDialog(plan: PgLoginPlan): PreambleDialog {
  return new PgLoginDialog(plan);
}
