// Link-local addresses: which are, how the CLI reads a zone, and a forge that refuses to let the
// routing table pick the link for them (the lab test sends them through the right one).
import { describe, expect, it } from 'vitest';
import { UsageError } from '../../src/cli/errors.js';
import { zoneOption } from '../../src/cli/parse-args.js';
import { isLinkLocal } from '../../src/net/endpoint.js';
import { SegmentForge } from '../../src/net/forge.js';

describe('isLinkLocal', () => {
  it('is fe80::/10 and 169.254.0.0/16, zone or not', () => {
    for (const a of ['fe80::1', 'FE80::1', 'febf:ffff::1', 'fe80::1%eth1', '169.254.0.1', '169.254.255.255']) expect(isLinkLocal(a)).toBe(true);
    for (const a of ['fec0::1', 'fe7f::1', 'fd7a:6b00::1', '::1', 'ff02::1', '169.253.0.1', '10.169.254.1', '198.18.1.2']) expect(isLinkLocal(a)).toBe(false);
  });
});

describe('zoneOption', () => {
  it('reads the interface after %, only on a link-local address', () => {
    expect(zoneOption('--address', 'fe80::1%eth1', 'fe80::1')).toBe('eth1');
    expect(zoneOption('--address', 'fe80::1', 'fe80::1')).toBeUndefined();
    expect(() => zoneOption('--address', 'fd00::1%eth1', 'fd00::1')).toThrow(new UsageError('--address: a zone (%eth1) goes only with a link-local address, got "fd00::1%eth1"'));
    expect(() => zoneOption('--address', 'fe80::1%', 'fe80::1')).toThrow(/the zone must be an interface name/);
  });
});

describe('SegmentForge and link-local destinations', () => {
  const spec = (src: string, dst: string) => ({ src, dst, sport: 1, dport: 2, seq: 0, ack: 0, flags: 0x10 });

  it('made without an interface, refuses them (the routing table would pick any link), sends the rest', () => {
    using f6 = new SegmentForge(6);
    expect(() => f6.send(spec('fe80::1', 'fe80::2'))).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE', message: 'spec.dst fe80::2 is link-local: it needs a sender made for its interface' }));
    expect(f6.send(spec('::1', '::1'))).toBe(60);
    using f4 = new SegmentForge(4);
    expect(() => f4.send(spec('169.254.0.1', '169.254.0.2'))).toThrow(/169\.254\.0\.2 is link-local/);
  });

  it('made for an unknown interface: ENODEV (test/lab/link-local.test.ts sends through a real one)', () => {
    expect(() => new SegmentForge(4, { interface: 'no-such-if0' })).toThrow(expect.objectContaining({ code: 'ENODEV', syscall: 'if_nametoindex' }));
    expect(() => new SegmentForge(6, { interface: 'x'.repeat(16) })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
  });
});
