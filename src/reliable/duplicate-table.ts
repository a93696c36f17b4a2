// The duplicate table (seed 004 FIG. 15, steps 212-214; [0060], [0068]): client ID + message ID
// -> the reply stored when the message was applied, so that a message resent after a failover
// (step 540: the client cannot know whether the old primary applied it) is answered with that
// reply and never applied twice. Pure, no I/O.
//
// Bound: each request carries "acknowledged below" A: the client holds the replies of all its
// messages below A (ReliableClient sends its lowest outstanding message ID). The table drops a
// client's entries below its A, so it holds at most what the client has outstanding (its
// window). A message below A is 'stale': the client said it had that reply, so it is answered
// with a stale status and never applied (a correct client never sends one). Client IDs are never
// forgotten: each leaves its floor and at most its window behind (retiring idle clients is not done).

export type DuplicateLookup<R> = { kind: 'new' } | { kind: 'duplicate'; entry: R } | { kind: 'stale'; floor: number };

export class DuplicateTable<R> {
  private readonly clients = new Map<string, { floor: number; entries: Map<number, R> }>();
  private count = 0;

  /** Entries held, all clients together. */
  get size(): number {
    return this.count;
  }

  /** Clients known. */
  get clientCount(): number {
    return this.clients.size;
  }

  private of(clientId: string) {
    let c = this.clients.get(clientId);
    if (!c) this.clients.set(clientId, (c = { floor: 0, entries: new Map() }));
    return c;
  }

  /** The client holds the replies of its messages below `below`: drops them (the floor only rises). */
  acknowledge(clientId: string, below: number): void {
    const c = this.of(clientId);
    if (below <= c.floor) return;
    // Entries are few per client (its window): walking them beats keeping them sorted.
    for (const id of c.entries.keys()) {
      if (id < below) {
        c.entries.delete(id);
        this.count--;
      }
    }
    c.floor = below;
  }

  lookup(clientId: string, msgId: number): DuplicateLookup<R> {
    const c = this.clients.get(clientId);
    if (!c) return { kind: 'new' };
    if (msgId < c.floor) return { kind: 'stale', floor: c.floor };
    const e = c.entries.get(msgId);
    return e === undefined ? { kind: 'new' } : { kind: 'duplicate', entry: e };
  }

  /** Stores the reply of a message just applied. Throws if it is there or below the floor (a caller's bug). */
  store(clientId: string, msgId: number, entry: R): void {
    const c = this.of(clientId);
    if (msgId < c.floor || c.entries.has(msgId)) throw new Error(`message ${clientId}/${msgId} stored twice or below its floor ${c.floor}`);
    c.entries.set(msgId, entry);
    this.count++;
  }

  /** Entries held for one client (tests, status). */
  entriesOf(clientId: string): number {
    return this.clients.get(clientId)?.entries.size ?? 0;
  }
}
