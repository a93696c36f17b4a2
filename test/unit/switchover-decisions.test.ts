// The switchover's pure decisions: what becomes of each handed-over connection (exact state,
// the receive queue replayed, the shadow's session; reset with the reason when the session is
// unknown or cannot be rebuilt), the lock's nftables rules, the INFO reading of the Redis
// catch-up, and the CLI's ADDRESS[:PORT].
import { describe, expect, it } from 'vitest';
import { parseClientList, parseInfo, serverSessionOf } from '../../src/agent/redis-catch-up.js';
import { parseServiceArg } from '../../src/cli/switchover.js';
import { lockRuleset, tightenRuleset } from '../../src/net/network-lock.js';
import { seededRandom } from './mirror-helpers.js';
import type { ContinuePlan } from '../../src/net/shadow/shadow-connection.js';
import { switchoverPlans } from '../../src/net/switchover-plans.js';
import { parseTcpRepairState, type TcpRepairState } from '../../src/net/tcp-repair-state.js';

const VIP = '198.18.7.200';

function state(port: number, recv = ''): TcpRepairState {
  return parseTcpRepairState({
    version: 1,
    family: 4,
    local: { address: VIP, port: 6379 },
    remote: { address: '198.18.7.3', port },
    send: { seq: 1000, queue: Buffer.from(':41\r\n').toString('base64'), unsent: 0 },
    recv: { seq: 4294967290, queue: Buffer.from(recv).toString('base64') },
    mss: 1448,
    options: { sack: true, timestamps: true, windowScale: { send: 7, recv: 7 } },
    timestamp: 123456,
    window: { sndWl1: 4294967290, sndWnd: 64240, maxWindow: 64240, rcvWnd: 65536, rcvWup: 4294967290 },
    buffers: { send: 87040, recv: 131072 },
  });
}

function shadow(port: number, over: Partial<Extract<ContinuePlan, { kind: 'restore' }>> = {}): ContinuePlan {
  const client = { address: '198.18.7.3', port };
  const server = { address: VIP, port: 6379 };
  return { kind: 'restore', client, server, state: state(port), replay: Buffer.alloc(0), preamble: { bytes: Buffer.from('*2\r\n$6\r\nSELECT\r\n$1\r\n2\r\n'), replies: 1 }, lastSeenMs: 500 + port, ...over };
}

describe('switchoverPlans', () => {
  it('restores the exact state, the unread requests replayed (RCV.NXT kept), the shadow\'s session as preamble', () => {
    const incr = '*2\r\n$4\r\nINCR\r\n$1\r\nk\r\n';
    // The shadow saw the unread INCR too (unanswered, its replay): what the server read is answered.
    const p = switchoverPlans([state(40000, incr)], [shadow(40000, { replay: Buffer.from('stale view') })], VIP, 9999)[0]!;
    expect(p).toMatchObject({ kind: 'restore', client: { port: 40000 }, lastSeenMs: 40500 });
    if (p.kind !== 'restore') throw new Error('not a restore');
    expect(p.replay.toString()).toBe(incr); // the primary's view, not the shadow's
    expect(p.preamble.replies).toBe(1);
    // RCV.NXT = seq + queue length, across the wrap of the sequence space.
    expect(p.state.recv).toEqual({ seq: (4294967290 + incr.length) % 2 ** 32, queue: Buffer.alloc(0) });
    expect(p.state.send.queue.toString()).toBe(':41\r\n');
  });

  it('resets, with the reason, what the shadow does not know or cannot rebuild; says a goodbye it has', () => {
    const plans = switchoverPlans(
      [state(1), state(2), state(3), state(4)],
      [shadow(1), { kind: 'reset', client: { address: '198.18.7.3', port: 2 }, server: { address: VIP, port: 6379 }, reason: 'pub/sub', dead: { local: { address: VIP, port: 6379 }, peer: { address: '198.18.7.3', port: 2 } } }, shadow(4, { goodbye: { bytes: Buffer.from('x'), reason: 'inside a transaction' } })],
      VIP,
      7,
    );
    expect(plans.map((p) => p.kind)).toEqual(['restore', 'reset', 'reset', 'restore']);
    expect(plans.map((p) => (p.kind === 'reset' ? p.reason : ''))).toEqual(['', 'its session cannot be rebuilt: pub/sub', expect.stringMatching(/^not shadowed here/), '']);
    expect(plans[2]).toMatchObject({ dead: { local: { address: VIP, port: 6379 }, peer: { address: '198.18.7.3', port: 3 } } });
    // A goodbye (PostgreSQL's 57P01) is said after the replies the client lacks; nothing is replayed.
    expect(plans[3]).toMatchObject({ kind: 'restore', goodbye: { reason: 'inside a transaction' }, replay: Buffer.alloc(0), preamble: { replies: 0 } });
    if (plans[3]!.kind === 'restore') expect(plans[3]!.state.send.queue.toString()).toBe(':41\r\n');
  });

  it('resets a session whose shadow may lag the server (replies it did not see, a request read but not answered in it); keeps a transaction\'s rebuild', () => {
    const ahead = state(7);
    // The server wrote 4 bytes more than the shadow saw (a reply still in its send queue, never sent).
    const lagging = { ...ahead, send: { ...ahead.send, queue: Buffer.concat([ahead.send.queue, Buffer.from('more')]) } };
    const transaction = { replay: { before: Buffer.from('B'), createJudge: () => ({ feed: () => ({ kind: 'more' as const }) }) }, goodbye: { bytes: Buffer.from('57P01'), reason: 'inside a transaction' } } as unknown as NonNullable<Extract<ContinuePlan, { kind: 'restore' }>['transaction']>;
    const plans = switchoverPlans(
      [lagging, state(8), state(9, 'Q'), state(10)],
      [
        shadow(7),
        // 3 bytes of a request the server read (its receive queue is empty) and the shadow saw no reply to.
        shadow(8, { replay: Buffer.from('abc') }),
        // The unread request, and 2 bytes the client sent after the lock (dropped there, seen by the shadow).
        shadow(9, { replay: Buffer.from('Qxy'), state: { ...state(9), recv: { seq: (4294967290 + 2) % 2 ** 32, queue: Buffer.alloc(0) } } }),
        shadow(10, { goodbye: transaction.goodbye, transaction }),
      ],
      VIP,
      7,
    );
    expect(plans.map((p) => (p.kind === 'reset' ? p.reason : 'restore'))).toEqual([
      "the shadow's view of its session may lag the server's: the server wrote 4 bytes the shadow has not seen",
      "the shadow's view of its session may lag the server's: the server read 3 bytes of requests whose replies the shadow has not seen",
      'restore',
      'restore',
    ]);
    expect(plans[3]).toMatchObject({ kind: 'restore', transaction: { goodbye: { reason: 'inside a transaction' } } });
    expect(plans[2]).not.toHaveProperty('transaction');
  });

  it('tells what it cannot move the protocol\'s goodbye instead, given one (PostgreSQL at its barrier)', () => {
    const bye = (reason: string) => ({ reason, bytes: Buffer.from('57P01') });
    const plans = switchoverPlans([state(20), state(21, 'Q'), state(22)], [shadow(22, { replay: Buffer.from('abc') })], VIP, 7, undefined, bye);
    expect(plans.map((p) => p.kind)).toEqual(['restore', 'restore', 'restore']);
    expect(plans.map((p) => (p.kind === 'restore' ? p.goodbye?.reason : ''))).toEqual([
      expect.stringMatching(/^not shadowed here/),
      expect.stringMatching(/^not shadowed here/),
      expect.stringMatching(/^the shadow's view of its session may lag the server's: the server read 3 bytes/),
    ]);
    // After the replies the client lacks; what the server never read is dropped (RCV.NXT past it), nothing replayed.
    const p1 = plans[1]!;
    if (p1.kind !== 'restore') throw new Error('not a restore');
    expect(p1.state.send.queue.toString()).toBe(':41\r\n');
    expect(p1.state.recv).toEqual({ seq: (4294967290 + 1) % 2 ** 32, queue: Buffer.alloc(0) });
    expect(p1.replay.length).toBe(0);
    // With the server's own sessions (Redis), a connection it cannot move is still reset.
    const withSessions = switchoverPlans([state(20)], [], VIP, 7, new Map(), bye);
    expect(withSessions[0]).toMatchObject({ kind: 'reset' });
  });

  it('refuses a state of another address', () => {
    expect(() => switchoverPlans([state(1)], [], '198.18.7.201', 0)).toThrow(RangeError);
  });
});

describe('switchoverPlans with the server\'s sessions', () => {
  it('rebuilds the session the server shows, resets what it says cannot move, and lends the shadow\'s AUTH only for another user', () => {
    const sessions = new Map([
      ['198.18.7.3|1', { kind: 'session' as const, commands: [['HELLO', '3'], ['SELECT', '2']], idleS: 0 }],
      ['198.18.7.3|2', { kind: 'blocked' as const, reason: 'pub/sub' }],
      ['198.18.7.3|4', { kind: 'auth' as const, commands: [] }],
      ['198.18.7.3|5', { kind: 'auth' as const, commands: [] }],
    ]);
    // The shadow lost track of 1 (a capture loss): the server's account is enough.
    const lost: ContinuePlan = { kind: 'reset', client: { address: '198.18.7.3', port: 1 }, server: { address: VIP, port: 6379 }, reason: 'a hole', dead: { local: { address: VIP, port: 6379 }, peer: { address: '198.18.7.3', port: 1 } } };
    const plans = switchoverPlans([state(1, 'x'), state(2), state(3), state(4), state(5)], [lost, shadow(4)], VIP, 77, sessions);
    expect(plans.map((p) => p.kind)).toEqual(['restore', 'reset', 'reset', 'restore', 'reset']);
    const p1 = plans[0]!;
    if (p1.kind !== 'restore') throw new Error('not a restore');
    expect(p1.preamble).toEqual({ bytes: Buffer.from('*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n*2\r\n$6\r\nSELECT\r\n$1\r\n2\r\n'), replies: 2 });
    expect(p1.replay.toString()).toBe('x');
    expect(p1.lastSeenMs).toBe(77); // idle 0 s: now
    expect(plans.map((p) => (p.kind === 'reset' ? p.reason : ''))).toEqual(['', 'it cannot be moved exactly: pub/sub', 'the server does not list this client: its session is unknown', '', expect.stringMatching(/^logged in as another user, whose password only the shadow could tell: not shadowed/)]);
    const p4 = plans[3]!;
    expect(p4.kind === 'restore' && p4.preamble.replies).toBe(1); // the shadow's
  });
});

describe('CLIENT LIST', () => {
  const line = (over: string) => `id=7 addr=198.18.7.3:40000 laddr=198.18.7.200:6379 fd=9 name= age=3 idle=0 flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=1024 rbp=0 obl=0 oll=0 omem=0 tot-mem=2000 events=r cmd=incr user=default redir=-1 resp=2 ${over}`;
  const of = (over: string) => serverSessionOf(parseClientList(line(over))[0]!);

  it('reads each client\'s fields', () => {
    const list = parseClientList(`${line('')}\n${line('').replace('40000', '40001')}\n\n`);
    expect(list.map((e) => e.get('addr'))).toEqual(['198.18.7.3:40000', '198.18.7.3:40001']);
    expect(list[0]!.get('laddr')).toBe('198.18.7.200:6379');
    expect(parseClientList('garbage\n')).toEqual([]);
  });

  it('turns a session into the commands that rebuild it', () => {
    expect(of('')).toEqual({ kind: 'session', commands: [], idleS: 0 });
    expect(of('db=2 name=worker-1 resp=3 idle=12')).toEqual({ kind: 'session', commands: [['HELLO', '3'], ['CLIENT', 'SETNAME', 'worker-1'], ['SELECT', '2']], idleS: 12 });
    expect(of('user=alice idle=x')).toEqual({ kind: 'auth', commands: [] });
  });

  it('says why a client cannot be moved exactly', () => {
    expect(of('flags=b')).toMatchObject({ kind: 'blocked', reason: expect.stringMatching(/^blocked in a command/) });
    expect(of('flags=x multi=2')).toMatchObject({ kind: 'blocked', reason: 'inside a transaction (MULTI)' });
    expect(of('flags=P sub=1')).toMatchObject({ kind: 'blocked', reason: 'pub/sub' });
    expect(of('psub=1')).toMatchObject({ kind: 'blocked', reason: 'pub/sub' });
    expect(of('qbuf=12')).toMatchObject({ kind: 'blocked', reason: expect.stringMatching(/12 bytes of a request it read in part/) });
    expect(of('oll=1')).toMatchObject({ kind: 'blocked', reason: expect.stringMatching(/part of a reply not yet written/) });
    expect(of('flags=S')).toMatchObject({ kind: 'blocked', reason: expect.stringMatching(/replication/) });
  });

  it('fuzz: 2,000 seeded mutations of CLIENT LIST and INFO text never throw; every client gets a verdict', () => {
    const { int } = seededRandom(0xc11e57);
    const base = `${line('')}\n${line('flags=x multi=1 db=3')}\n# Replication\r\nrole:slave\r\nmaster_port:6379\r\n`;
    const alphabet = 'a=: \n\r-01x#';
    for (let iter = 0; iter < 2000; iter++) {
      const chars = [...base];
      for (let k = 0, n = 1 + int(10); k < n; k++) {
        const at = int(chars.length);
        if (int(2)) chars[at] = alphabet[int(alphabet.length)]!;
        else chars.splice(at, 1 + int(8));
      }
      const text = chars.join('');
      parseInfo(text);
      for (const e of parseClientList(text)) expect(['session', 'auth', 'blocked']).toContain(serverSessionOf(e).kind);
    }
  });
});

describe('the lock', () => {
  it('drops the service both ways on every interface but loopback', () => {
    expect(lockRuleset('t', VIP, 6379)).toBe(
      ['table inet t {', '  chain in {', '    type filter hook input priority -10; policy accept;', `    iifname != "lo" ip daddr ${VIP} tcp dport 6379 drop`, '  }', '  chain out {', '    type filter hook output priority -10; policy accept;', `    oifname != "lo" ip saddr ${VIP} tcp sport 6379 drop`, '  }', '}'].join('\n'),
    );
    expect(lockRuleset('t', '2001:db8::1', 5432)).toContain('ip6 daddr 2001:db8::1 tcp dport 5432 drop');
    // Inbound only (a PostgreSQL switchover's: the replies must reach the backup's shadow).
    const inbound = lockRuleset('t', VIP, 5432, { outbound: false });
    expect(inbound).toContain(`ip daddr ${VIP} tcp dport 5432 drop`);
    expect(inbound).not.toContain('hook output');
    // The clients' pure ACKs let in first (a segment of headers only, one rule per data offset), then dropped again.
    const acks = lockRuleset('t', VIP, 5432, { outbound: false, acks: true }).split('\n');
    expect(acks.filter((l) => l.endsWith(' accept'))).toHaveLength(11);
    expect(acks).toContain(`    iifname != "lo" ip daddr ${VIP} tcp dport 5432 tcp flags & (fin | syn | rst | ack) == ack tcp doff 8 ip hdrlength 5 ip length 52 accept`);
    expect(acks.indexOf(`    iifname != "lo" ip daddr ${VIP} tcp dport 5432 drop`)).toBe(acks.length - 3);
    expect(lockRuleset('t', '2001:db8::1', 5432, { outbound: false, acks: true })).toContain('tcp doff 5 ip6 nexthdr tcp ip6 length 20 accept');
    expect(tightenRuleset('t', VIP, 5432)).toBe(`flush chain inet t in\nadd rule inet t in iifname != "lo" ip daddr ${VIP} tcp dport 5432 drop`);
    expect(() => lockRuleset('t', VIP, 0)).toThrow(RangeError);
  });
});

describe('the Redis catch-up', () => {
  it('reads INFO replication', () => {
    const info = parseInfo('# Replication\r\nrole:slave\r\nmaster_host:198.18.7.1\r\nmaster_port:6379\r\nmaster_link_status:up\r\nslave_repl_offset:848862\r\n\r\n');
    expect(Object.fromEntries(info)).toEqual({ role: 'slave', master_host: '198.18.7.1', master_port: '6379', master_link_status: 'up', slave_repl_offset: '848862' });
  });
});

describe('takeover switchover ADDRESS[:PORT]', () => {
  it('takes an address with or without a port, IPv6 in brackets', () => {
    expect(parseServiceArg(VIP)).toEqual({ address: VIP });
    expect(parseServiceArg(`${VIP}:6379`)).toEqual({ address: VIP, port: 6379 });
    expect(parseServiceArg('2001:db8::1')).toEqual({ address: '2001:db8::1' });
    expect(parseServiceArg('[2001:db8::1]:5432')).toEqual({ address: '2001:db8::1', port: 5432 });
  });

  it('refuses anything else with a usage error', () => {
    for (const bad of ['redis', `${VIP}:0`, `${VIP}:70000`, `${VIP}:x`, '[nope]:1', '']) expect(() => parseServiceArg(bad), bad).toThrow(/switchover|port/);
  });
});
