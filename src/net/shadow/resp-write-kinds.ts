// Which Redis commands a takeover may replay without knowing whether the dead primary ran them,
// and which it can look up in the replication stream the promoted replica received (seed 003
// [0055]: a request the primary committed is not run again). A command the primary ran is in that
// stream exactly as the client sent it only when Redis propagates it verbatim, and counted there
// only when it propagates every successful run (SADD of a member already there, SETNX of a key
// that exists, HDEL of a missing field change nothing and are not propagated: a count of them
// cannot tell a run from no run). Commands Redis rewrites for its replicas (SET with an expiry becomes SET PXAT, EXPIRE
// becomes PEXPIREAT, INCRBYFLOAT becomes SET, SPOP becomes SREM, scripts become their effects,
// blocking pops their non-blocking forms) cannot be found there, so they are `unmatchable`.
// Sources: the command pages (https://redis.io/docs/latest/commands/) and Redis 7's
// propagation rules (alsoPropagate / rewriteClientCommandVector in t_string.c, expire.c, ...).

/**
 * read: changes nothing (replaying it is harmless); matchable: a write the replication stream
 * carries verbatim, once for every run that succeeded (an error reply: it did not run);
 * unmatchable: any other write, or a command not known here.
 */
export type RespWriteKind = 'read' | 'matchable' | 'unmatchable';

/** Commands that change no data (and no session state a replay could disturb). */
const READS = new Set([
  'get', 'mget', 'exists', 'strlen', 'getrange', 'substr', 'type', 'ttl', 'pttl', 'expiretime', 'pexpiretime',
  'hget', 'hmget', 'hgetall', 'hexists', 'hlen', 'hkeys', 'hvals', 'hstrlen', 'hrandfield', 'hscan',
  'llen', 'lrange', 'lindex', 'lpos',
  'scard', 'smembers', 'sismember', 'smismember', 'srandmember', 'sscan', 'sinter', 'sunion', 'sdiff', 'sintercard',
  'zcard', 'zscore', 'zmscore', 'zrange', 'zrangebyscore', 'zrevrange', 'zrevrangebyscore', 'zrank', 'zrevrank', 'zcount', 'zlexcount', 'zrangebylex', 'zscan',
  'dbsize', 'keys', 'scan', 'randomkey', 'ping', 'echo', 'time', 'lastsave', 'info', 'role', 'command',
  'bitcount', 'bitpos', 'getbit', 'pfcount', 'xlen', 'xrange', 'xrevrange', 'geopos', 'geodist', 'geohash',
  // Session commands: the preamble rebuilds their state; running one again sets the same state.
  'select', 'auth', 'hello', 'readonly', 'readwrite',
]);

/**
 * Writes Redis 7 propagates as the client sent them (name, arguments) after every successful run
 * (each increments server.dirty unconditionally: t_string.c, t_hash.c, t_list.c, t_zset.c, bitops.c).
 */
const VERBATIM_WRITES = new Set(['incr', 'decr', 'incrby', 'decrby', 'append', 'mset', 'hset', 'hmset', 'hincrby', 'lpush', 'rpush', 'lset', 'zincrby', 'setbit']);

/** What a request is to the replay matcher; argc: the command's words, its name included. */
export function respWriteKind(name: string, argc: number): RespWriteKind {
  if (READS.has(name)) return 'read';
  // SET with options: EX/PX/EXAT are rewritten (PXAT), and GET/NX/XX/KEEPTTL are not told apart here.
  if (name === 'set') return argc === 3 ? 'matchable' : 'unmatchable';
  return VERBATIM_WRITES.has(name) ? 'matchable' : 'unmatchable';
}

/** Whether a command's arguments must be digested to be matched (a write the stream may carry verbatim). */
export function respMayMatch(name: string): boolean {
  return name === 'set' || VERBATIM_WRITES.has(name);
}

/**
 * The replay matcher's key of a write: its database and argumentsDigest (resp-request.ts), the
 * same for a request a shadow framed and for its copy in the replication stream. null when the
 * database is not a plain decimal index (Redis would refuse it; nothing to match).
 */
export function respWriteKey(db: string, digest: string): string | null {
  if (!/^[0-9]{1,5}$/.test(db)) return null;
  return `${Number(db)}:${digest}`;
}
