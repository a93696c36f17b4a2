// The replicated store engine: an etcd cluster (v3 API; tested against etcd 3.4), through the
// maintained TypeScript client `etcd3` (leases, transactions and watches over gRPC).
//
// Keys, under one prefix per cluster (default `/takeover/<cluster>/`):
//   apps/<tag>    the application's record as JSON; its revision is the key's mod_revision
//   nodes/<node>  a live node, attached to the node's lease (gone when the lease ends)
// compareAndSwap is one transaction: if the key's mod_revision is the expected one (0: the key
// is absent, create_revision == 0) then put (or delete), else read it for the message. The new
// revision is the transaction's header revision, which is the key's new mod_revision.
//
// Every call is bounded (callTimeoutMs, default 2 s): each attempt carries a gRPC deadline,
// attempts that fail for the cluster's or a member's sake (no leader, a dead or unreachable
// member, a timeout) are tried again on another member until the bound, and then the call fails
// with StoreUnavailableError naming the endpoints. The client's own retries are turned off (they
// would run past the bound) and a member that failed is skipped for a short while (a circuit
// breaker per member), so a dead, hung or cut-off member costs one attempt, not every call.
// When the leader dies etcd needs about one to two election timeouts to elect another; a call
// rides through that only if callTimeoutMs is longer (etcd's default election timeout is 1 s:
// with the default 2 s bound, calls made just after a leader's death may fail and must be made
// again).
//
// A write whose answer did not come may still take effect: a leader that accepted it and then
// lost its quorum may have it in its log, and the next leader commits it (raft). Such a failure
// is StoreUnavailableError with `maybeWritten`; the compare on the revision makes the late write
// harmless (it applies only if nothing else was written to the record in between), but the
// caller must read again. When a later attempt of the same call meets a conflict, the record is
// read: if it holds exactly the bytes this call wrote (or is gone, for a delete), the earlier
// attempt won and the call succeeds.
//
// Leases: etcd TTLs are whole seconds and the server raises them to its minimum
// (1.5 × election timeout, rounded up: 2 s at etcd's default 1 s election timeout), so ttlMs is
// rounded up to seconds and the TTL the server granted is what counts. `lost` fires when no
// renewal was answered within that TTL (counted from the sending of the last answered one), or
// when etcd says the lease is gone (expired or revoked). The server may keep the lease a little
// longer (a new leader extends every lease), never shorter, so `lost` is on the safe side.
// Renewals need a leader too: a TTL shorter than a leader election can be lost to one.
//
// TLS and auth. With `tls`, the endpoints are https:// and the client trusts only the CA given;
// with a certificate and key it also shows its own (mutual TLS: etcd's --client-cert-auth).
// With `auth`, the client takes a token for the user (etcd's Authenticate, a password checked
// with bcrypt: ~0.1 s) before its first call, asking the members in the order of the endpoints,
// each within an attempt's time; etcd3 takes a new one when a call is refused for a token that
// ran out (etcd forgets a simple token unused for --auth-token-ttl, 300 s), and so does a watch
// here (etcd3 does not for streams). A refusal — a wrong password, a user without rights on the
// prefix, a certificate either side does not accept — is StoreAccessError (ESTOREACCESS): a
// wrong password or missing rights at once (etcd has decided), a TLS refusal once every member
// refused in turn or the call's bound ran out (one member with a bad certificate must not stop
// the others from serving). A TLS handshake that never ends is bounded like any attempt: every
// attempt is also abandoned at its deadline, whatever the client is waiting for.
// Three of these reach into etcd3 1.1 (pinned ^1.1.2), each feature-detected and covered by the
// lab tests over TLS with auth: the token asked on each member's own client (clear TLS
// errors), forgotten when a watch is refused for it, and the watch stream set up again after a
// refused watch (etcd3's queue of watches being created would otherwise wait forever).
import { X509Certificate } from 'node:crypto';
import { circuitBreaker, ConsecutiveBreaker, ExponentialBackoff, handleWhen, isBrokenCircuitError, noop } from 'cockatiel';
import { castGrpcError, Etcd3, type IKeyValue, type IOptions, type Lease, type Namespace, type Watcher, EtcdAuthenticationFailedError, EtcdInvalidAuthTokenError, EtcdLeaseInvalidError, EtcdPermissionDeniedError, EtcdWatchStreamEnded, isRecoverableError } from 'etcd3';
import { type NodeLease, type RawRecord, type StoreAccessReason, type StoreBackend, StoreAccessError, StoreConflictError, StoreUnavailableError } from './store-backend.js';

export interface EtcdBackendOptions {
  /** Client URLs of the members: http://ADDRESS:PORT, https:// with `tls` (at least one; all of them, so any one may fail). */
  endpoints: string[];
  /** The cluster's name: keys live under `/takeover/<cluster>/`. */
  cluster: string;
  /** Overrides the key prefix (ends with `/`). */
  prefix?: string;
  /** The most one call takes before it fails with StoreUnavailableError (ms, default 2000). */
  callTimeoutMs?: number;
  /** The most one attempt takes (ms, default a quarter of callTimeoutMs): a member that does not answer leaves time to ask others. */
  attemptTimeoutMs?: number;
  /** How long a member that failed is skipped (ms, default 500). */
  memberRetryMs?: number;
  /**
   * Client TLS, for https:// endpoints: PEM bytes of the CA that signed the members'
   * certificates (`ca`: the only one trusted), and this client's certificate and its key for
   * members that require one (mutual TLS; `cert` and `key` together). A member's certificate
   * must name the address of its endpoint (a subjectAltName IP or DNS name).
   */
  tls?: { ca: Buffer; cert?: Buffer; key?: Buffer };
  /**
   * etcd's RBAC auth: this client's user and its password. The user needs read and write on the
   * prefix. Without it, etcd with --client-cert-auth takes the client certificate's CN as the user.
   */
  auth?: { user: string; password: string };
}

/** How often the lease watchdog looks whether the last renewal is older than the TTL. */
const LEASE_CHECK_MS = 100;

/** How long after its deadline an attempt the client still waits on is abandoned (the client's own deadline should end it first). */
const ABANDON_GRACE_MS = 100;

/** etcd's refusals of a request as such (too large for it or for its gRPC server): final, and nothing was written. */
function refused(err: unknown): boolean {
  return err instanceof Error && /etcdserver: request is too large|received message larger than max/.test(err.message);
}

/** Errors after which the request surely did not take effect: it was never sent, or etcd refused it before proposing it. */
function surelyNotApplied(err: unknown): boolean {
  if (isBrokenCircuitError(err) || refused(err)) return true;
  const m = err instanceof Error ? err.message : String(err);
  return /No connection established|ECONNREFUSED|Waiting for LB pick|etcdserver: no leader|raft proposal dropped|etcdserver: too many requests|etcdserver: not capable|Connection pool has no hosts/.test(m);
}

/** An attempt that was still waiting (for an answer, a connection, a token) at its deadline. */
class AttemptTimedOut extends Error {}

/** Errors of the cluster's or a member's state, worth another attempt on another member; anything else (a request etcd refuses) is final. */
function transient(err: unknown): boolean {
  if (refused(err)) return false;
  if (isBrokenCircuitError(err) || err instanceof AttemptTimedOut) return true;
  if (err instanceof Error && isRecoverableError(err)) return true;
  return surelyNotApplied(err);
}

/** A write that failed so may still take effect: no answer came (a refusal from etcd is an answer: nothing was written). */
function mayHaveApplied(err: unknown): boolean {
  return transient(err) && !surelyNotApplied(err);
}

/** gRPC's and OpenSSL's words, one line and without what says nothing to an operator (a timestamp, a source file and line, an empty note). */
function tidy(message: string): string {
  return message
    .replace(/\s*\(\d{4}-\d\d-\d\dT[\d:.]+Z\)/g, '')
    .replace(/\.?\s*Resolution note:\s*$/, '')
    .replace(/[0-9A-F]{8,}:error:[0-9A-F]+:SSL routines:\w+:/g, '')
    .replace(/:[^\s:]+\.c:\d+:/g, ': ')
    .replace(/\s*\n\s*/g, ' ')
    .trim();
}

/** The CN of the first certificate in `pem`, or undefined (none, or it does not parse: the client's creation says why). */
function commonName(pem: Buffer): string | undefined {
  try {
    return /^CN=(.*)$/m.exec(new X509Certificate(pem).subject)?.[1];
  } catch {
    return undefined;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function revisionOf(kv: IKeyValue): number {
  const n = Number(kv.mod_revision);
  if (!Number.isSafeInteger(n) || n <= 0) throw new Error(`etcd returned a revision that is not a positive integer: ${kv.mod_revision}`);
  return n;
}

export class EtcdBackend implements StoreBackend {
  readonly engine = 'etcd';
  readonly location: string;
  readonly prefix: string;
  private readonly client: Etcd3;
  private readonly ns: Namespace;
  private readonly callTimeoutMs: number;
  private readonly attemptTimeoutMs: number;
  /** How many endpoints: a TLS refusal from this many attempts in a row is every member's. */
  private readonly members: number;
  private readonly tls: boolean;
  private readonly clientCert: boolean;
  private readonly user: string | undefined;
  /** The client certificate's CN: etcd's user for a request without a token (--client-cert-auth). */
  private readonly certUser: string | undefined;
  private readonly watchers = new Set<() => Promise<void>>();
  private readonly leases = new Set<{ abandon(why: string): void }>();
  private closed = false;

  constructor(options: EtcdBackendOptions) {
    if (options.endpoints.length === 0) throw new Error('etcd store: no endpoints');
    const scheme = options.tls ? 'https' : 'http';
    for (const e of options.endpoints) {
      if (!new RegExp(`^${scheme}://[^/]+:\\d+$`).test(e)) {
        const why = options.tls ? ' (with tls every endpoint is https://)' : /^https:/.test(e) ? ' (https:// needs tls: at least the CA that signed the members\' certificates)' : '';
        throw new Error(`etcd store: endpoint ${e} is not ${scheme}://ADDRESS:PORT${why}`);
      }
    }
    if (options.tls && (options.tls.cert === undefined) !== (options.tls.key === undefined)) throw new Error('etcd store: tls.cert and tls.key go together (mutual TLS), or neither');
    if (options.auth && (options.auth.user === '' || options.auth.password === '')) throw new Error('etcd store: auth needs a user and a password');
    if (!/^[A-Za-z0-9._-]+$/.test(options.cluster)) throw new Error(`etcd store: cluster name ${JSON.stringify(options.cluster)} must be letters, digits, '.', '_' or '-'`);
    this.prefix = options.prefix ?? `/takeover/${options.cluster}/`;
    this.location = options.endpoints.join(',');
    this.members = options.endpoints.length;
    this.tls = options.tls !== undefined;
    this.clientCert = options.tls?.cert !== undefined;
    this.certUser = options.tls?.cert && commonName(options.tls.cert);
    this.user = options.auth?.user;
    this.callTimeoutMs = options.callTimeoutMs ?? 2000;
    const attemptTimeoutMs = Math.min(this.callTimeoutMs, options.attemptTimeoutMs ?? Math.ceil(this.callTimeoutMs / 4));
    this.attemptTimeoutMs = attemptTimeoutMs;
    const memberRetryMs = options.memberRetryMs ?? 500;
    const tls = options.tls;
    const auth = options.auth;
    const clientOptions: IOptions = {
      // (No dialTimeout: etcd3 1.1 documents it but never reads it; each attempt's deadline
      // bounds the connecting too.)
      hosts: options.endpoints,
      ...(tls ? { credentials: { rootCertificate: tls.ca, ...(tls.cert && tls.key ? { certChain: tls.cert, privateKey: tls.key } : {}) } } : {}),
      // The token is asked for with no deadline unless given one here: a member that accepts
      // the connection and never answers would hold every call (each waits for that token).
      ...(auth ? { auth: { username: auth.user, password: auth.password, callOptions: () => ({ deadline: Date.now() + attemptTimeoutMs }) } } : {}),
      faultHandling: {
        // No retries inside the client: ours are bounded by the call's deadline.
        global: noop,
        // A member whose call failed is passed over for memberRetryMs, then tried again.
        host: () => circuitBreaker(handleWhen((e) => transient(e)), { halfOpenAfter: memberRetryMs, breaker: new ConsecutiveBreaker(1) }),
        // Watch streams reconnect quickly (the client's default backs off up to 30 s). The client
        // types this as a backoff and calls next() on it for each delay: a backoff's first state.
        watchBackoff: new ExponentialBackoff({ initialDelay: 50, maxDelay: 1000 }).next(),
      },
    };
    try {
      this.client = new Etcd3(clientOptions);
    } catch (err) {
      // The TLS material is read here (a key that is not the certificate's, PEM that is not).
      throw new Error(`etcd store: ${tls ? 'the TLS certificates or key cannot be used' : 'cannot create the client'}: ${(err as Error).message}`, { cause: err });
    }
    if (auth) this.askTokensOnMembersClients();
    this.ns = this.client.namespace(this.prefix);
  }

  async readAll(): Promise<RawRecord[]> {
    const res = await this.call('read all applications', false, (deadline) => this.ns.getAll().prefix('apps/').options({ deadline }).exec());
    return res.kvs.map((kv) => this.decode(kv));
  }

  async read(tag: string): Promise<RawRecord | undefined> {
    const kv = await this.get(tag);
    return kv && this.decode(kv);
  }

  async compareAndSwap(tag: string, expected: number, record: unknown): Promise<number> {
    if (!Number.isSafeInteger(expected) || expected < 0) throw new RangeError(`expected revision must be a non-negative integer: ${expected}`);
    const key = this.key(tag);
    const value = record === null ? undefined : (JSON.stringify(record) as string | undefined);
    if (record !== null && value === undefined) throw new TypeError(`the record of ${tag} is not JSON (${typeof record}): only null deletes`);
    let uncertain = false; // an earlier attempt of this call may have taken effect
    return this.call(`compare-and-swap of ${tag}`, true, async (deadline) => {
      const txn = this.ns.if(key, expected === 0 ? 'Create' : 'Mod', '==', expected).options({ deadline });
      txn.then(value === undefined ? this.ns.delete().key(key) : this.ns.put(key).value(value));
      txn.else(this.ns.get(key));
      let res;
      try {
        res = await txn.commit();
      } catch (err) {
        if (mayHaveApplied(err)) uncertain = true;
        throw err;
      }
      if (res.succeeded) return value === undefined ? 0 : Number(res.header.revision);
      const current = res.responses[0]?.response_range?.kvs[0];
      if (uncertain) {
        // An earlier attempt may be what changed it: ours if it holds exactly what we wrote.
        if (value === undefined ? current === undefined : current !== undefined && current.value.toString() === value) return current ? revisionOf(current) : 0;
      }
      const rev = current ? revisionOf(current) : 0;
      throw new StoreConflictError(tag, expected === 0 ? 'already exists' : rev === 0 ? `no longer exists (expected revision ${expected})` : `changed meanwhile (revision ${rev}, expected ${expected})`);
    });
  }

  async watch(onChange: (tag: string) => void): Promise<() => void> {
    this.assertOpen();
    let stopped = false;
    const seen = new Set<string>();
    const report = (kv: IKeyValue) => {
      if (stopped) return;
      const tag = this.tagOf(kv);
      seen.add(tag);
      onChange(tag);
    };
    let watcher: Watcher | undefined;
    const open = async (): Promise<Watcher> => {
      const w = this.ns.watch().prefix('apps/').watcher();
      w.on('put', report);
      w.on('delete', report);
      // While it is being set up: etcd refuses a watch by cancelling it at once (no rights on
      // the prefix, a token it no longer knows), an `error`; a stream that could not be set up
      // (no token, a TLS refusal, a member down) is a `disconnected`, and the client tries again.
      let settle: ((err?: unknown) => void) | undefined;
      let established = false;
      let dropped: unknown;
      let tlsDrops = 0; // in a row
      w.on('connected', () => settle?.());
      w.on('disconnected', (err: unknown) => {
        // (A stream that broke also ends; a member passed over says less than why it was.)
        if (established || err instanceof EtcdWatchStreamEnded || isBrokenCircuitError(err)) return;
        dropped = err;
        const access = this.accessProblem(err);
        tlsDrops = access?.reason === 'tls' ? tlsDrops + 1 : 0;
        if (access && (access.reason !== 'tls' || tlsDrops >= this.members)) settle?.(err);
      });
      // Once set up: etcd cancelled the watch, its history compacted while we were away, or the
      // client set the stream up again on a member that does not know its token. Watch again
      // from now and report every tag we know of, since some change may have been missed.
      w.on('error', (err: unknown) => {
        if (err instanceof EtcdInvalidAuthTokenError) this.forgetToken();
        if (w.id === null) this.restartWatchStream(err); // refused at its creation
        if (established) void resume();
        else settle?.(err ?? new Error('the watch was cancelled'));
      });
      try {
        await this.bounded('establish a watch', new Promise<void>((resolve, reject) => (settle = (err) => (err === undefined ? resolve() : reject(err)))));
        established = true;
      } catch (err) {
        void w.cancel().catch(() => {});
        const timedOut = err instanceof StoreUnavailableError;
        const access = this.accessProblem(timedOut ? dropped : err);
        if (access) throw new StoreAccessError(this.location, access.reason, `establish a watch${timedOut ? `: no answer within ${this.callTimeoutMs} ms; last` : ''}: ${access.why}`, { cause: err });
        if (timedOut) throw err;
        throw new StoreUnavailableError(this.location, `establish a watch: ${(err as Error).message}`, { cause: err });
      }
      return w;
    };
    const resume = async () => {
      for (let delay = 50; !stopped && !this.closed; delay = Math.min(delay * 2, 1000)) {
        try {
          watcher = await open();
          if (stopped) return void watcher.cancel().catch(() => {});
          for (const r of await this.readAll()) seen.add(r.tag);
          for (const tag of seen) if (!stopped) onChange(tag);
          return;
        } catch {
          await sleep(delay);
        }
      }
    };
    watcher = await open();
    const cancel = async () => {
      stopped = true;
      this.watchers.delete(cancel);
      const w = watcher!;
      // If the cancel gets no answer, the stream breaks some time later: drop the watcher then,
      // or the client would set it up again (forever, once closed).
      w.on('disconnected', () => void w.cancel().catch(() => {}));
      await this.bounded('cancel a watch', w.cancel()).catch(() => {});
    };
    this.watchers.add(cancel);
    return () => void cancel();
  }

  async keepAlive(node: string, ttlMs: number): Promise<NodeLease> {
    if (!/^[A-Za-z0-9._-]+$/.test(node)) throw new Error(`etcd store: node name ${JSON.stringify(node)} must be letters, digits, '.', '_' or '-'`);
    let ttl = Math.max(1, Math.ceil(ttlMs / 1000)); // seconds; the server's answers say what it granted
    let renewedAt = 0; // when the last answered renewal (or the grant) was sent
    let inFlight: number[] = []; // send times of renewals not yet answered, oldest first
    let live = false; // granted and the node key written: from then on `lost` counts
    let lose: (why: string) => void = () => {};
    const lost = new Promise<string>((r) => (lose = r));
    let ended = false;
    let timer: NodeJS.Timeout | undefined;
    let lease: Lease | undefined;
    const end = (why: string) => {
      if (ended) return;
      ended = true;
      clearInterval(timer);
      lease?.release(); // no more renewals
      this.leases.delete(handle);
      lose(why);
    };
    const handle = { abandon: end };
    const key = `nodes/${node}`;
    try {
      await this.call(`lease for ${node}`, true, async (deadline) => {
        lease?.release(); // an earlier attempt's lease, if it was granted, runs out unused
        const sent = Date.now();
        const l = this.ns.lease(ttl, { deadline });
        lease = l;
        inFlight = [];
        // The client renews every TTL/3 on a stream; each answer renews from when it was sent.
        l.on('keepaliveEstablished', () => l === lease && (inFlight = []));
        l.on('keepaliveFired', () => l === lease && inFlight.push(Date.now()));
        l.on('keepaliveSucceeded', (res) => {
          if (l !== lease) return;
          renewedAt = inFlight.shift() ?? renewedAt;
          const granted = Number(res.TTL);
          if (granted > 0) ttl = granted;
        });
        l.on('lost', (err) => {
          // Before `live`, a failed grant: grant() below rejects with it.
          if (l === lease && live) end(`the lease of ${node} is gone: ${err instanceof EtcdLeaseInvalidError ? 'etcd no longer knows it (it expired or was revoked)' : err.message}`);
        });
        await l.grant();
        if (l !== lease) throw new AttemptTimedOut('an abandoned attempt'); // (a later attempt took over)
        renewedAt = Math.max(renewedAt, sent);
        await l.put(key).value(JSON.stringify({ node, since: Date.now() })).options({ deadline });
      });
    } catch (err) {
      lease?.release();
      throw err;
    }
    const l = lease!;
    live = true;
    // The watchdog: lost once the TTL ran out since the last answered renewal was sent.
    timer = setInterval(() => {
      const age = Date.now() - renewedAt;
      if (age < ttl * 1000) return;
      end(`could not renew the lease of ${node} for ${age} ms (TTL ${ttl} s) at ${this.location}`);
      // The server may keep it until a leader expires it; revoke it if the store answers.
      void this.revoke(l).catch(() => {});
    }, LEASE_CHECK_MS);
    timer.unref();
    this.leases.add(handle);
    return {
      node,
      lost,
      close: async () => {
        end(`the lease of ${node} was closed`);
        await this.revoke(l);
      },
    };
  }

  async liveNodes(): Promise<string[]> {
    const keys = await this.call('read the live nodes', false, (deadline) => this.ns.getAll().prefix('nodes/').options({ deadline }).keys());
    return keys.map((k) => k.slice('nodes/'.length));
  }

  /**
   * Stops every watch and closes the client. Leases still open are not revoked: they stop being
   * renewed and run out after their TTL, as after a crash (`lost` resolves at once); close a
   * lease first for a planned stop.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const l of [...this.leases]) l.abandon(`the store client for ${this.location} was closed`);
    await Promise.all([...this.watchers].map((cancel) => cancel()));
    this.client.close();
  }

  private key(tag: string): string {
    return `apps/${tag}`;
  }

  private get(tag: string): Promise<IKeyValue | undefined> {
    return this.call(`read ${tag}`, false, async (deadline) => (await this.ns.get(this.key(tag)).options({ deadline }).exec()).kvs[0]);
  }

  /** The tag of an apps/ key: a watch event's key is without the prefix, a range answer's with it. */
  private tagOf(kv: IKeyValue): string {
    const key = kv.key.toString();
    return key.slice((key.startsWith(this.prefix) ? this.prefix.length : 0) + 'apps/'.length);
  }

  private decode(kv: IKeyValue): RawRecord {
    const tag = this.tagOf(kv);
    try {
      return { tag, record: JSON.parse(kv.value.toString()), revision: revisionOf(kv) };
    } catch (err) {
      throw new StoreUnavailableError(this.location, `the record of ${tag} (${this.prefix}apps/${tag}) is not JSON: ${(err as Error).message}`);
    }
  }

  private revoke(l: Lease): Promise<void> {
    return this.call('revoke a lease', true, (deadline) => l.revoke({ deadline }));
  }

  private assertOpen(): void {
    if (this.closed) throw new StoreUnavailableError(this.location, 'the store client was closed');
  }

  /** `p`, or StoreUnavailableError after callTimeoutMs. */
  private async bounded<T>(what: string, p: Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        p,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new StoreUnavailableError(this.location, `${what}: no answer within ${this.callTimeoutMs} ms`)), this.callTimeoutMs);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Runs `attempt` with a deadline until it succeeds, fails for good, or callTimeoutMs ran out.
   * `write`: a failure may leave the write pending (StoreUnavailableError.maybeWritten).
   * Throws StoreConflictError from `attempt`, StoreAccessError when the store refuses this
   * client, StoreUnavailableError otherwise.
   */
  private async call<T>(what: string, write: boolean, attempt: (deadline: Date) => Promise<T>): Promise<T> {
    this.assertOpen();
    const start = Date.now();
    const end = start + this.callTimeoutMs;
    let last: unknown;
    let maybeWritten = false;
    let attempts = 0;
    let tlsRefusals = 0; // in a row
    for (;;) {
      const now = Date.now();
      if (now >= end) break;
      attempts++;
      const deadline = Math.min(end, now + this.attemptTimeoutMs);
      try {
        return await this.abandonAt(deadline, attempt(new Date(deadline)));
      } catch (err) {
        if (err instanceof StoreConflictError || err instanceof StoreUnavailableError) throw err;
        // A member passed over (its circuit open) says less than the failure that opened it.
        if (!isBrokenCircuitError(err) || last === undefined || isBrokenCircuitError(last)) last = err;
        if (write && mayHaveApplied(err)) maybeWritten = true;
        const access = this.accessProblem(err);
        if (access?.reason === 'tls') tlsRefusals++;
        else if (!isBrokenCircuitError(err)) tlsRefusals = 0;
        // A member's circuit opens at its first failure: refusals in a row come from different members.
        if (access && (access.reason !== 'tls' || tlsRefusals >= this.members)) {
          throw new StoreAccessError(this.location, access.reason, `${what} failed: ${access.why}`, { cause: err, maybeWritten });
        }
        if (!transient(err) || this.closed) {
          throw new StoreUnavailableError(this.location, `${what} failed: ${(err as Error).message}`, { cause: err, maybeWritten });
        }
        await sleep(Math.min(25, Math.max(0, end - Date.now())));
      }
    }
    const access = this.accessProblem(last);
    const bound = `no answer within ${this.callTimeoutMs} ms (${attempts} attempt${attempts === 1 ? '' : 's'}`;
    if (access) throw new StoreAccessError(this.location, access.reason, `${what}: ${bound}; last: ${access.why})`, { cause: last, maybeWritten });
    const why = tidy(last instanceof Error ? last.message : String(last));
    // A member that serves TLS answers a plain client's first bytes by closing the connection.
    const hint = !this.tls && /Failed to connect/.test(why) ? ' (if the members serve TLS: https:// endpoints and tls)' : '';
    throw new StoreUnavailableError(this.location, `${what}: ${bound}; last: ${why})${hint}`, { cause: last, maybeWritten });
  }

  /** `p`, or AttemptTimedOut a moment after `deadline` (epoch ms) if the client is still waiting (its own deadline did not end it). */
  private async abandonAt<T>(deadline: number, p: Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        p,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new AttemptTimedOut(`no answer by the attempt's deadline (${this.attemptTimeoutMs} ms)`)), Math.max(0, deadline - Date.now()) + ABANDON_GRACE_MS);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Whether `err` is the store refusing this client (an operator must change the credentials,
   * the certificates or the user's rights), and in words for the operator; undefined for
   * anything else.
   */
  private accessProblem(err: unknown): { reason: StoreAccessReason; why: string } | undefined {
    if (!(err instanceof Error)) return undefined;
    const m = err.message;
    const says = (reason: StoreAccessReason, why: string) => ({ reason, why: `${why} (${tidy(m)})` });
    if (err instanceof EtcdAuthenticationFailedError || /authentication failed, invalid user ID or password/.test(m)) {
      return says('authentication', `etcd refused the password of user ${this.user}: a wrong password, or no such user`);
    }
    if (/authentication is not enabled/.test(m)) return says('authentication', `a user and password are given (user ${this.user}), but this etcd has authentication disabled (etcdctl auth enable), so it refuses them`);
    if (err instanceof EtcdPermissionDeniedError || /etcdserver: permission denied|user name is empty/.test(m)) {
      const grant = `grant its role readwrite on that prefix (etcdctl role grant-permission ROLE --prefix=true readwrite ${this.prefix})`;
      if (this.user !== undefined) return says('permission', `user ${this.user} may not read and write the keys under ${this.prefix}: ${grant}`);
      if (this.certUser !== undefined) return says('permission', `etcd has authentication enabled; this client gives no user and password, and user ${this.certUser} (its certificate's CN) may not read and write the keys under ${this.prefix}: ${grant}, or give auth`);
      return says('permission', 'etcd has authentication enabled and this client gives no user and password (nor a client certificate whose CN names a user)');
    }
    if (/alert bad certificate|certificate required|alert unknown ca|alert number (42|48|116)\b/.test(m)) {
      return says('tls', `the member refused this client in the TLS handshake: it requires a client certificate signed by a CA it trusts (etcd's --client-cert-auth, --trusted-ca-file)${this.clientCert ? ', and the one given is not' : ', and none is given (tls cert and key)'}`);
    }
    if (/unable to verify the first certificate|self[- ]signed certificate|unable to get (local )?issuer certificate|certificate signature failure/.test(m)) {
      return says('tls', "the member's certificate is not signed by the CA given (tls ca)");
    }
    if (/does not match certificate's altnames|ERR_TLS_CERT_ALTNAME_INVALID/.test(m)) return says('tls', "the member's certificate does not name the address it was reached at (its subjectAltName must list the endpoint's address)");
    if (/certificate has expired|certificate is not yet valid/.test(m)) return says('tls', 'a certificate has expired or is not valid yet');
    if (this.tls && /before secure TLS connection was established|wrong version number|packet length too long|unknown protocol|No connection established\. Last error: (Error: )?read ECONNRESET/.test(m)) {
      return says('tls', 'the member closed the connection in the TLS handshake: does it serve TLS at this URL (etcd\'s --cert-file, --key-file, and an https:// --listen-client-urls)?');
    }
    return undefined;
  }

  /**
   * etcd3 asks each member for a token on a gRPC client of its own, new at every request and
   * never closed, and such a client reports a connection that failed before as `Last error:
   * null` (a TLS refusal then says nothing of why). The token is asked here on the member's own
   * client instead: its connection, its errors, closed with it (and renewed, as etcd3 does for
   * its calls, after a failure of the connection). Reaches into etcd3 1.1's connection pool;
   * the lab tests of TLS refusals with auth check that the messages say why.
   */
  private askTokensOnMembersClients(): void {
    type AuthService = { authenticate(req: { name: string; password: string }, options: object, done: (err: Error | null, res?: { token: string }) => void): void };
    type Host = { host: string; getServiceClient(name: 'Auth'): AuthService; resetAllServices(): void };
    type Authenticator = { getCredentialsFromHost?: (address: string, name: string, password: string, callOptions: object | undefined) => Promise<string> };
    const pool = (this.client as unknown as { pool?: { hosts?: Host[]; authenticator?: Authenticator } }).pool;
    const authenticator = pool?.authenticator;
    const hosts = pool?.hosts;
    if (!hosts || typeof authenticator?.getCredentialsFromHost !== 'function') return;
    authenticator.getCredentialsFromHost = (address, name, password, callOptions) =>
      new Promise<string>((resolve, reject) => {
        const host = hosts.find((h) => h.host === address);
        if (!host) return reject(new Error(`etcd3: no member ${address} in the pool`));
        try {
          host.getServiceClient('Auth').authenticate({ name, password }, callOptions ?? {}, (err, res) => {
            if (!err) return resolve(res!.token);
            const cast = castGrpcError(err);
            if (isRecoverableError(cast)) host.resetAllServices();
            reject(cast);
          });
        } catch (err) {
          reject(err as Error); // (the client was closed)
        }
      });
  }

  /**
   * etcd refuses a watch by answering its creation with `canceled` (no rights, a token it does
   * not know), which etcd3 1.1's queue of watches being created does not expect: every later
   * watch on that stream would wait forever, and a stream set up with a token etcd no longer
   * knows stays refused. The stream is set up again, with the token then current. Reaches into
   * the namespace's WatchManager (checked by the lab test of a watch outliving its token).
   */
  private restartWatchStream(err: unknown): void {
    const manager = (this.ns as unknown as { watchManager?: { state?: unknown; handleError?: (err: unknown) => void } }).watchManager;
    if (manager?.state === 2 /* Connected */ && typeof manager.handleError === 'function') manager.handleError(err);
  }

  /**
   * Makes the client take a new auth token at its next call. etcd3 does it itself when a unary
   * call is refused for a token etcd no longer knows, not when a watch is (it reaches into the
   * client: checked by the lab test of a watch outliving its token).
   */
  private forgetToken(): void {
    const pool = (this.client as unknown as { pool?: { authenticator?: { invalidateMetadata?: () => void } } }).pool;
    pool?.authenticator?.invalidateMetadata?.();
  }
}
