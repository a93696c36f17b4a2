// The relay keeper's messages (relay-keeper.ts, keeper-client.ts): one JSON object per line over
// a Unix stream socket in the agent's state directory (root only). Pure: validation and
// encoding, no I/O. Each line is checked whole with zod; a line that fails is refused with its
// reason and changes nothing (the keeper answers `error`, the agent drops it and says so).
//
// The sockets themselves never cross this wire: the agent holds its copies (fd numbers in `take`)
// until the keeper answers, and the keeper copies them out of the agent's process with
// pidfd_getfd (the agent's pid is in `take`; both run as root with CAP_SYS_PTRACE).
import { z } from 'zod';
import { firstIssue } from '../../schema-fields.js';

/** The longest line either side accepts, bytes: a take carries the bytes both streams had read but not delivered. */
export const MAX_KEEPER_LINE_BYTES = 8 * 1024 * 1024;
/**
 * The wire's version, in the keeper's `relays` answer: an agent and a keeper of another version
 * do not hand relays over (the agent relays them itself, and says why).
 */
export const KEEPER_WIRE_VERSION = 1;
/** Relays per `relays` answer: a list longer than this comes in several (`more`). */
export const KEEPER_LIST_PAGE = 1000;

const id = z.string().regex(/^[A-Za-z0-9_.:@\[\]-]{1,128}$/, 'must be 1-128 of A-Z a-z 0-9 _.:@[]-');
const fd = z.number().int().min(0).max(0x7fffffff);
const count = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const base64 = z.string().max(MAX_KEEPER_LINE_BYTES).regex(/^[A-Za-z0-9+/]*={0,2}$/, 'must be base64');
const text = z.string().max(500);

/** What the agent says of a continued connection: shown by the keeper's list, logged at its end. */
const relayMeta = z.strictObject({
  /** The client, ADDRESS:PORT. */
  client: text,
  /** The service the client talks to (the taken-over address), ADDRESS:PORT. */
  service: text,
  /** The upstream it is relayed to, HOST:PORT. */
  upstream: text,
  /** The node whose connection it was (the dead peer, or a switchover's old primary). */
  peer: text,
  /** When the relay began, ms since the epoch. */
  since: z.number().nonnegative(),
});
export type RelayMeta = z.infer<typeof relayMeta>;

const relayCounts = z.strictObject({
  /** Client bytes written to the upstream, since the relay began (the agent's part included). */
  clientBytes: count,
  /** Upstream bytes written to the client, likewise. */
  upstreamBytes: count,
});

const requests = z.discriminatedUnion('op', [
  z.strictObject({
    op: z.literal('take'),
    id,
    /** The agent's pid: where the fds are. */
    pid: z.number().int().min(2).max(0x3fffffff),
    /** The agent's fds for the client socket and the upstream socket. */
    clientFd: fd,
    upstreamFd: fd,
    /** Bytes read from one socket and not yet written to the other (base64). */
    toUpstream: base64,
    toClient: base64,
    /** That socket's EOF was read already. */
    clientEof: z.boolean(),
    upstreamEof: z.boolean(),
    meta: relayMeta,
    /** What the agent's relay had written before the handover. */
    before: relayCounts,
  }),
  z.strictObject({ op: z.literal('list') }),
  /** Closes the named relays (FIN, or RST with unread bytes). */
  z.strictObject({ op: z.literal('close'), ids: z.array(id).max(100_000), reason: text }),
  /**
   * From a keeper that replaces this one (`takeover relay-keeper --replace`): hand it every relay.
   * The answer comes as `take` requests on the same connection, one per relay (this keeper's
   * pid, its fds: the replacement copies them), then `handed`.
   */
  z.strictObject({ op: z.literal('replace'), pid: z.number().int().min(2).max(0x3fffffff) }),
]);
export type KeeperRequest = z.infer<typeof requests>;
export type TakeRequest = Extract<KeeperRequest, { op: 'take' }>;

const keptRelay = relayMeta.extend({ id, ...relayCounts.shape });
export type KeptRelayInfo = z.infer<typeof keptRelay>;

const replies = z.discriminatedUnion('op', [
  /** The keeper relays it now; the agent closes its own fds. */
  z.strictObject({ op: z.literal('taken'), id }),
  /** Nothing was taken (the reason says why); the agent's fds are as they were. */
  z.strictObject({ op: z.literal('refused'), id, reason: text }),
  /** A kept relay ended: both sockets closed. `error`: the syscall error that ended it. */
  z.strictObject({ op: z.literal('ended'), id, reason: text, ...relayCounts.shape }),
  /** The answer to `list`, in pages of KEEPER_LIST_PAGE relays; `more`: another page follows. */
  z.strictObject({ op: z.literal('relays'), version: z.number().int().positive(), pid: z.number().int().positive(), relays: z.array(keptRelay).max(KEEPER_LIST_PAGE), more: z.boolean() }),
  /** To the replacement: every relay was offered (a `take` each); `closed`: those that could not be (ended here). */
  z.strictObject({ op: z.literal('handed'), relays: count, closed: count }),
  /**
   * To the agents: this keeper was replaced by the keeper `pid`, which now listens on the same
   * socket and holds the relays (same ids); this connection ends next.
   */
  z.strictObject({ op: z.literal('replaced'), pid: z.number().int().positive() }),
  /** A request line refused as a whole; `id` when the line named one (a take: nothing taken). */
  z.strictObject({ op: z.literal('error'), id: id.optional(), reason: text }),
]);
export type KeeperReply = z.infer<typeof replies>;

/** A line that is not a valid message: `reason` names the field (code EKEEPERMSG). */
export class KeeperMessageError extends Error {
  override readonly name = 'KeeperMessageError';
  readonly code = 'EKEEPERMSG';
}

function parseLine<T>(schema: z.ZodType<T>, line: string, what: string): T {
  if (line.length > MAX_KEEPER_LINE_BYTES) throw new KeeperMessageError(`${what} longer than ${MAX_KEEPER_LINE_BYTES} bytes`);
  let o: unknown;
  try {
    o = JSON.parse(line);
  } catch {
    throw new KeeperMessageError(`${what} is not JSON`);
  }
  const r = schema.safeParse(o);
  if (!r.success) {
    const { field, message } = firstIssue(r.error);
    throw new KeeperMessageError(`${what}: ${field ? `${field} ` : ''}${message}`);
  }
  return r.data;
}

/** One request line (the agent's); throws KeeperMessageError. */
export function parseKeeperRequest(line: string): KeeperRequest {
  return parseLine(requests, line, 'relay keeper request');
}

/** One reply line (the keeper's); throws KeeperMessageError. */
export function parseKeeperReply(line: string): KeeperReply {
  return parseLine(replies, line, 'relay keeper reply');
}

/** The `id` a line that failed validation names, when it names one (for the error's answer). */
export function lineId(line: string): string | undefined {
  try {
    const o = JSON.parse(line) as { id?: unknown };
    return typeof o.id === 'string' && id.safeParse(o.id).success ? o.id : undefined;
  } catch {
    return undefined;
  }
}

/** A message as its line (newline included). */
export function keeperLine(msg: KeeperRequest | KeeperReply): string {
  return `${JSON.stringify(msg)}\n`;
}
