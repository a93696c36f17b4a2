// Address takeover against a real kernel: rtnetlink add/remove inside namespace A, and
// announcements from A that must rewrite namespace B's neighbour entry for the address; the
// kernel's removal of an address whose lifetime ran out (the address lease), with a taker in B
// that probes the link before it adds the address (never on both).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import type { NodeChild, LabEvent } from '../../src/lab/node-child.js';
import { native } from '../../src/native.js';
import { run } from '../../src/lab/exec.js';
import { Lab } from '../../src/lab/lab.js';
import { eventually } from './eventually.js';
import { kernelExpirySlackMs, LEASE_MARGIN_MS, leaseDeadline } from '../../src/agent/address-lease.js';
import { PROBE_GIVE_UP_MS } from '../../src/net/address-probe.js';
import { addressSampler } from './address-sampler.js';

const fixture = fileURLToPath(new URL('fixtures/address-ops.ts', import.meta.url));
const probeFixture = fileURLToPath(new URL('fixtures/probe-ops.ts', import.meta.url));
const STALE_MAC = '02:00:00:00:00:99';

let lab: Lab;
const ip = (host: string, args: string[]) => run('ip', ['-n', lab.host(host).ns, ...args]);
let ops: NodeChild;
/** The taker in namespace B: the address probe, then the add (fixtures/probe-ops.ts). */
let taker: NodeChild;
let nextReq = 1;

beforeAll(async () => {
  lab = await Lab.create({ hosts: ['a', 'b'] });
  ops = lab.spawn('a', fixture);
  taker = lab.spawn('b', probeFixture);
  await ops.waitFor('ready');
  await taker.waitFor('ready');
});

afterAll(async () => {
  await lab?.destroy();
});

/** Runs one address operation inside namespace A. */
async function op(cmd: Record<string, unknown>): Promise<LabEvent> {
  const reqId = nextReq++;
  ops.send({ ...cmd, reqId });
  return ops.waitFor('result', 10_000, (e) => e.reqId === reqId);
}

/** Runs one command of the taker inside namespace B. */
async function take(cmd: Record<string, unknown>): Promise<LabEvent> {
  const reqId = nextReq++;
  taker.send({ ...cmd, reqId });
  return taker.waitFor('result', 20_000, (e) => e.reqId === reqId);
}

interface AddrInfo {
  local: string;
  prefixlen: number;
  tentative?: boolean;
  dadfailed?: boolean;
}

async function addressesOfA(): Promise<AddrInfo[]> {
  const { stdout } = await ip('a', ['-j', 'addr', 'show', 'dev', 'eth0']);
  const links = JSON.parse(stdout) as Array<{ addr_info: AddrInfo[] }>;
  return links.flatMap((l) => l.addr_info);
}

async function neighMacInB(address: string): Promise<string | undefined> {
  const { stdout } = await ip('b', ['-j', 'neigh', 'show', 'to', address, 'dev', 'eth0']);
  const entries = JSON.parse(stdout) as Array<{ dst: string; lladdr?: string }>;
  return entries.find((e) => e.dst === address)?.lladdr;
}

/** Waits until B's entry for address points at A's MAC; the error shows B's whole table. */
async function expectBPointsToA(address: string): Promise<void> {
  try {
    const mac = lab.host('a').mac;
    const pointsToA = async () => ((await neighMacInB(address)) === mac ? true : undefined);
    await eventually(pointsToA, 3000, `B's entry for ${address} to become ${mac}`);
  } catch (err) {
    const { stdout } = await ip('b', ['neigh', 'show', 'dev', 'eth0']);
    throw new Error(`${(err as Error).message}; B's table:\n${stdout}`);
  }
}

async function poisonB(address: string): Promise<void> {
  await ip('b', ['neigh', 'replace', address, 'lladdr', STALE_MAC, 'dev', 'eth0', 'nud', 'stale']);
  expect(await neighMacInB(address)).toBe(STALE_MAC);
}

describe.each([
  { family: 4, prefix: 24 },
  { family: 6, prefix: 64 },
])('IPv$family address', ({ family, prefix }) => {
  const ifname = 'eth0';
  // An unused address in the lab's subnet (host numbers are small); known once the lab exists.
  let address = '';
  beforeAll(() => {
    const a = lab.host('a');
    address = family === 4 ? a.ipv4.replace(/\.\d+$/, '.200') : a.ipv6.replace(/::[0-9a-f]+$/, '::200');
  });

  it('addAddress adds it (usable at once: not tentative), removeAddress removes it', async () => {
    expect(await op({ cmd: 'add', ifname, address, prefixLength: prefix })).toMatchObject({ ok: true });
    const added = (await addressesOfA()).find((a) => a.local === address);
    expect(added).toMatchObject({ local: address, prefixlen: prefix });
    expect(added?.tentative).toBeFalsy();

    expect(await op({ cmd: 'remove', ifname, address, prefixLength: prefix })).toMatchObject({ ok: true });
    expect((await addressesOfA()).find((a) => a.local === address)).toBeUndefined();
  });

  it('reports EEXIST on a second add and EADDRNOTAVAIL on removing what is not there', async () => {
    expect(await op({ cmd: 'add', ifname, address, prefixLength: prefix })).toMatchObject({ ok: true });
    expect(await op({ cmd: 'add', ifname, address, prefixLength: prefix })).toMatchObject({
      ok: false,
      code: 'EEXIST',
      errno: -17,
      syscall: 'rtnetlink',
    });
    expect(await op({ cmd: 'remove', ifname, address, prefixLength: prefix })).toMatchObject({ ok: true });
    expect(await op({ cmd: 'remove', ifname, address, prefixLength: prefix })).toMatchObject({
      ok: false,
      code: 'EADDRNOTAVAIL',
      syscall: 'rtnetlink',
    });
  });

  it('reports ENODEV for an unknown interface', async () => {
    expect(await op({ cmd: 'add', ifname: 'nosuch0', address, prefixLength: prefix })).toMatchObject({
      ok: false,
      code: 'ENODEV',
      errno: -19,
      syscall: 'if_nametoindex',
    });
    expect(await op({ cmd: 'announce', ifname: 'nosuch0', address })).toMatchObject({ ok: false, code: 'ENODEV' });
  });

  it('routesLocally: true for an address of A, false for one it does not have; ENODEV for an unknown interface', async () => {
    expect(await op({ cmd: 'routes', ifname, address: lab.host('a')[family === 4 ? 'ipv4' : 'ipv6'] })).toMatchObject({ ok: true, value: true });
    expect(await op({ cmd: 'routes', ifname, address })).toMatchObject({ ok: true, value: false });
    expect(await op({ cmd: 'routes', ifname: 'nosuch0', address })).toMatchObject({ ok: false, code: 'ENODEV' });
  });

  it("takeOverAddress adds and announces: B's stale neighbour entry moves to A's MAC", async () => {
    await poisonB(address);
    // Resolved only once packets for it are delivered: an IPv6 address without DAD is listed at
    // once, its local route inserted from a workqueue later.
    expect(await op({ cmd: 'takeover', ifname, address, prefixLength: prefix, announce: 1 })).toMatchObject({
      ok: true,
      value: { added: true, routesLocally: true },
    });
    await expectBPointsToA(address);
    // Already owned: not an error, and it announces again.
    await poisonB(address);
    expect(await op({ cmd: 'takeover', ifname, address, prefixLength: prefix, announce: 1 })).toMatchObject({
      ok: true,
      value: { added: false },
    });
    await expectBPointsToA(address);
  });

  it("announceAddress alone (one frame) overrides B's entry", async () => {
    // The address is on A from the previous test; the kernel itself announced nothing.
    await poisonB(address);
    await new Promise((r) => setTimeout(r, 200));
    expect(await neighMacInB(address)).toBe(STALE_MAC);
    expect(await op({ cmd: 'announce', ifname, address, count: 1 })).toMatchObject({ ok: true });
    await expectBPointsToA(address);
    expect(await op({ cmd: 'remove', ifname, address, prefixLength: prefix })).toMatchObject({ ok: true });
  });
});

describe('an address already on the interface that cannot serve', () => {
  const ifname = 'eth0';
  let address = '';
  let v4 = '';
  beforeAll(() => {
    address = lab.host('a').ipv6.replace(/::[0-9a-f]+$/, '::201');
    v4 = lab.host('a').ipv4.replace(/\.\d+$/, '.201');
  });
  const entriesOfA = async (addr: string) => (await op({ cmd: 'entries', ifname, address: addr })).value as Array<{ prefixLength: number; flags: number }>;

  it("IPv6 'dadfailed tentative' (B held it when A added it): replaced with a usable one, bind works again", async () => {
    // B, the node that dies, holds the address; A, its backup, adds it with DAD, which fails.
    await ip('b', ['addr', 'add', `${address}/64`, 'dev', 'eth0', 'nodad']);
    await ip('a', ['addr', 'add', `${address}/64`, 'dev', 'eth0']);
    await eventually(async () => (await addressesOfA()).find((x) => x.local === address)?.dadfailed || undefined, 5000, 'DAD to fail on A');
    expect(await entriesOfA(address)).toEqual([expect.objectContaining({ prefixLength: 64, flags: expect.any(Number) })]);
    expect((await entriesOfA(address))[0]!.flags & 0x48).toBe(0x48); // DADFAILED | TENTATIVE
    expect(await op({ cmd: 'bind', address })).toMatchObject({ ok: false, code: 'EADDRNOTAVAIL' });

    await ip('b', ['addr', 'del', `${address}/64`, 'dev', 'eth0']); // B is gone
    expect(await op({ cmd: 'takeover', ifname, address, prefixLength: 64, announce: 1 })).toMatchObject({
      ok: true,
      value: { added: true, replaced: 'dadfailed tentative' },
    });
    const now = (await addressesOfA()).find((x) => x.local === address);
    expect(now).toMatchObject({ prefixlen: 64 });
    expect(now?.tentative ?? false).toBe(false);
    expect(now?.dadfailed ?? false).toBe(false);
    expect(await op({ cmd: 'bind', address })).toMatchObject({ ok: true });
    await ip('a', ['addr', 'del', `${address}/64`, 'dev', 'eth0']);
  });

  it.each([
    { what: 'IPv6 deprecated and expiring', v6: true, setup: ['preferred_lft', '0', 'valid_lft', '600'], prefix: 64, replaced: /^deprecated, expires in \d+ s$/ },
    { what: 'IPv6 under another prefix length', v6: true, setup: [], prefix: 64, existing: 80, replaced: /^prefix \/80, not \/64$/ },
    { what: 'IPv4 expiring', v6: false, setup: ['valid_lft', '600', 'preferred_lft', '600'], prefix: 24, replaced: /^expires in \d+ s$/ },
  ])('$what: replaced by a permanent one of the takeover\'s prefix, and said so', async ({ v6, setup, prefix, existing, replaced }) => {
    const addr = v6 ? address : v4;
    await ip('a', ['addr', 'add', `${addr}/${existing ?? prefix}`, 'dev', 'eth0', ...(v6 ? ['nodad'] : []), ...setup]);
    const r = await op({ cmd: 'takeover', ifname, address: addr, prefixLength: prefix, announce: 1 });
    expect(r).toMatchObject({ ok: true, value: { added: true, replaced: expect.stringMatching(replaced) } });
    expect(await entriesOfA(addr)).toEqual([{ prefixLength: prefix, flags: expect.any(Number), scope: 0, preferredLifetime: -1, validLifetime: -1 }]);
    // Usable as it is now: a second takeover keeps it.
    expect(await op({ cmd: 'takeover', ifname, address: addr, prefixLength: prefix, announce: 1 })).toMatchObject({ ok: true, value: { added: false } });
    await ip('a', ['addr', 'del', `${addr}/${prefix}`, 'dev', 'eth0']);
  });
});

describe('address lifetimes (the address lease)', () => {
  const ifname = 'eth0';
  const entriesOf = async (address: string) => (await op({ cmd: 'entries', ifname, address })).value as Array<{ prefixLength: number; flags: number; preferredLifetime: number; validLifetime: number }>;

  it.each([
    { family: 4, prefix: 24, host: '.202' },
    { family: 6, prefix: 64, host: '::202' },
  ])('IPv$family: setAddressLifetime gives an address a finite lifetime and makes it permanent again; one that is not there is refused, not added', async ({ family, prefix, host }) => {
    const a = lab.host('a');
    const address = family === 4 ? a.ipv4.replace(/\.\d+$/, host) : a.ipv6.replace(/::[0-9a-f]+$/, host);
    expect(await op({ cmd: 'lifetime', ifname, address, prefixLength: prefix, seconds: 30 })).toMatchObject({ ok: false, code: 'EADDRNOTAVAIL' });
    expect(await entriesOf(address)).toEqual([]);
    expect(await op({ cmd: 'add', ifname, address, prefixLength: prefix })).toMatchObject({ ok: true });
    const nodad = family === 6 ? 0x02 : 0;
    expect((await entriesOf(address))[0]).toMatchObject({ prefixLength: prefix, validLifetime: -1, preferredLifetime: -1 });
    expect(await op({ cmd: 'lifetime', ifname, address, prefixLength: prefix, seconds: 30 })).toMatchObject({ ok: true });
    const leased = (await entriesOf(address))[0]!;
    expect(leased.validLifetime).toBeGreaterThanOrEqual(29);
    expect(leased.validLifetime).toBeLessThanOrEqual(30);
    expect(leased.preferredLifetime).toBe(leased.validLifetime);
    expect(leased.flags & 0x80).toBe(0); // no longer IFA_F_PERMANENT
    expect(leased.flags & nodad).toBe(nodad); // IPv6 keeps NODAD through the change
    // Under another prefix length it is not the same address: refused, nothing added.
    expect(await op({ cmd: 'lifetime', ifname, address, prefixLength: prefix + 1, seconds: 30 })).toMatchObject({ ok: false, code: 'EADDRNOTAVAIL' });
    expect(await entriesOf(address)).toHaveLength(1);
    expect(await op({ cmd: 'lifetime', ifname, address, prefixLength: prefix, seconds: 'forever' })).toMatchObject({ ok: true });
    expect(await entriesOf(address)).toEqual([expect.objectContaining({ validLifetime: -1, preferredLifetime: -1, flags: expect.any(Number) })]);
    expect((await entriesOf(address))[0]!.flags & (0x80 | nodad)).toBe(0x80 | nodad);
    expect(await op({ cmd: 'remove', ifname, address, prefixLength: prefix })).toMatchObject({ ok: true });
  });

  // What a taker waits for on top of a lease: how late the kernel removes an expired address;
  // and what keeps one holder when the kernel is later than that: the taker's probe of the link.
  // The two families run at the same time (each test waits out ~4 s of lifetimes three times):
  // the kernel checks their lifetimes in separate works (IPv4 check_lifetime, IPv6
  // addrconf_verify) that one family's address changes do not reschedule for the other, and the
  // fixtures answer requests concurrently; each family's addresses, sampler and taker are its own.
  it.concurrent.for([
    { family: 4, prefix: 24, host: '.203' },
    { family: 6, prefix: 64, host: '::203' },
  ])('IPv$family: the kernel removes an address whose lifetime ran out (measured: within kernelExpirySlackMs for IPv4); a taker that probes from its deadline never makes two holders', { timeout: 60_000 }, async ({ family, prefix, host }, { expect }) => {
    const a = lab.host('a');
    const address = family === 4 ? a.ipv4.replace(/\.\d+$/, host) : a.ipv6.replace(/::[0-9a-f]+$/, host);
    const seconds = 2;
    const late: number[] = [];
    const probed: string[] = [];
    const both: unknown[] = [];
    let sampled = 0;
    for (let i = 0; i < 3; i++) {
      expect(await op({ cmd: 'add', ifname, address, prefixLength: prefix })).toMatchObject({ ok: true });
      // Lifetimes start at a random point of the kernel's second (its checks round to seconds).
      await new Promise((r) => setTimeout(r, Math.random() * 1000));
      // The owner's last renewal, and (at the earliest) the taker's decision: now.
      const renewedAt = Date.now();
      const expiry = op({ cmd: 'expiry', ifname, address, prefixLength: prefix, seconds });
      // The taker adds the address after its deadline, once its probe finds it gone (as
      // peer-takeover.ts does). Who holds it is sampled from then on only: the sampler's forks
      // would otherwise compete with the 2 ms reads that time the kernel's removal.
      await new Promise((r) => setTimeout(r, leaseDeadline(renewedAt, seconds) - Date.now()));
      const s = addressSampler(lab, ['a', 'b'], address);
      try {
        const taken = await take({ cmd: 'take', ifname: 'eth0', address, prefixLength: prefix, decidedAt: renewedAt, seconds });
        const r = await expiry;
        expect(r).toMatchObject({ ok: true });
        const v = r.value as { lateMs: number; gapMs: number };
        expect(v.gapMs).toBeLessThan(100); // the reads themselves kept up
        late.push(Math.round(v.lateMs));
        expect(taken).toMatchObject({ ok: true, value: { outcome: { kind: 'gone' } } });
        const held = (taken.value as { outcome: { held?: { pastLeaseMs: number } } }).outcome.held;
        probed.push(held ? `held ${held.pastLeaseMs} ms past the lifetime` : 'free');
        expect(await s.now()).toBe('b');
        await s.stop();
        both.push(...s.twoHolders());
        sampled += s.samples.length;
      } finally {
        await s.stop();
        await ip('b', ['addr', 'del', `${address}/${prefix}`, 'dev', 'eth0']).catch(() => undefined);
      }
    }
    expect(both, `${sampled} samples`).toEqual([]);
    console.info(`IPv${family}, lifetime ${seconds} s: removed ${late.join(', ')} ms after it ran out (the taker allows ${kernelExpirySlackMs(seconds)} ms, then probes: ${probed.join(', ')})`);
    // IPv4 keeps to the slack the taker allows. IPv6 does not always (a CI run saw an address
    // removed 4737 ms late): the taker's probe keeps that from making two holders (above), at
    // the cost of the wait; past PROBE_GIVE_UP_MS of probing the takeover fails instead.
    const bound = family === 4 ? kernelExpirySlackMs(seconds) : kernelExpirySlackMs(seconds) + LEASE_MARGIN_MS + PROBE_GIVE_UP_MS;
    for (const l of late) {
      expect(l).toBeGreaterThanOrEqual(-25); // up to 20 ms early (ADDRCONF_TIMER_FUZZ_MINUS), and the 2 ms reads
      expect(l).toBeLessThanOrEqual(bound);
    }
  });
});

describe('argument validation (no namespace needed)', () => {
  const invalid = (fn: () => void, field: RegExp) => {
    let caught: unknown;
    try {
      fn();
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(TypeError);
    expect((caught as { code: string }).code).toBe('ERR_INVALID_ARG_VALUE');
    expect((caught as Error).message).toMatch(field);
  };

  it('rejects bad addresses, prefix lengths and interface names before any syscall', () => {
    invalid(() => native.addAddress('lo', '198.18.0.300', 24), /address/);
    invalid(() => native.addAddress('lo', '198.18.0.1', 33), /prefixLength/);
    invalid(() => native.removeAddress('lo', 'fd7a:6b00::1', 129), /prefixLength/);
    invalid(() => native.addAddress('x'.repeat(16), '198.18.0.1', 24), /ifname/);
    invalid(() => native.announceAddress('lo', 'nope'), /address/);
    invalid(() => native.setAddressLifetime('lo', '198.18.0.1', 24, 0, 0), /lifetimeSeconds/);
    invalid(() => native.setAddressLifetime('lo', '198.18.0.1', 24, 2 ** 32 - 1, 0), /lifetimeSeconds/);
    invalid(() => native.setAddressLifetime('lo', '198.18.0.1', 24, 1.5, 0), /lifetimeSeconds/);
    invalid(() => native.setAddressLifetime('lo', '198.18.0.1', 24, 5, -1), /flags/);
    invalid(() => native.setAddressLifetime('lo', '198.18.0.1', 33, 5, 0), /prefixLength/);
  });

  it('refuses to announce on a non-Ethernet interface', () => {
    expect(() => native.announceAddress('lo', '127.0.0.1')).toThrow(expect.objectContaining({ code: 'EOPNOTSUPP' }));
  });
});
