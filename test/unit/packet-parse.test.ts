// native.parsePacket against frames from test/unit/frame-builder.ts: exact fields for good
// frames, null for each kind of malformed or unwanted one, and a seeded random run (noise and
// mutations of valid frames) that must never throw and whose accepted results must hold up.
import { describe, expect, it } from 'vitest';
import { LINK_ETHERNET, LINK_RAW_IP, native, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, TCP_URG, type ParsedSegment } from '../../src/native.js';
import { buildFrame, buildFrameInfo, fixTcpChecksum, locateTcp, mulberry32, opt, tcpChecksumOk, type FrameSpec } from './frame-builder.js';

const V4: FrameSpec = { src: '198.18.0.1', dst: '198.19.255.254' };
const V6: FrameSpec = { src: 'fd7a:6b00::1', dst: 'fd7a:6b00:0:1::abcd' };

const parse = (b: Uint8Array, link: number = LINK_ETHERNET, verifyChecksum = false): ParsedSegment | null =>
  native.parsePacket(b, link, { verifyChecksum });

/** Parsed with and without checksum verification; both must agree for a well-formed frame. */
function parseBoth(b: Uint8Array, link: number = LINK_ETHERNET): ParsedSegment | null {
  const plain = parse(b, link, false);
  const verified = parse(b, link, true);
  expect(verified).toEqual(plain);
  return verified;
}

describe('parsePacket: well-formed frames', () => {
  it('IPv4 with MSS, NOPs, window scale, SACK-permitted, timestamps: every field exact', () => {
    const b = buildFrame({
      ...V4, sport: 40001, dport: 5432, seq: 0xfffffff0, ack: 0x80000001, flags: TCP_SYN | TCP_ACK, window: 29200, urgent: 0,
      options: [...opt.mss(1460), ...opt.sackPerm(), ...opt.ts(0xdeadbeef, 0xfeedface), ...opt.nop(), ...opt.ws(7)],
    });
    expect(parseBoth(b)).toEqual({
      family: 4, src: '198.18.0.1', dst: '198.19.255.254', sport: 40001, dport: 5432, seq: 0xfffffff0, ack: 0x80000001,
      flags: TCP_SYN | TCP_ACK, window: 29200, urgentPointer: 0, payloadLength: 0, mss: 1460, wscale: 7, sackPermitted: true,
      tsval: 0xdeadbeef, tsecr: 0xfeedface,
    });
  });

  it('IPv4 with payload, URG and the urgent pointer, no options: no option fields at all', () => {
    const payload = Buffer.from('GET / HTTP/1.1\r\n\r\n!'); // odd length: the checksum pads
    const b = buildFrame({ ...V4, sport: 65535, dport: 1, seq: 0, ack: 0xffffffff, flags: TCP_ACK | TCP_PSH | TCP_URG, window: 0, urgent: 7, payload });
    expect(parseBoth(b)).toEqual({
      family: 4, src: '198.18.0.1', dst: '198.19.255.254', sport: 65535, dport: 1, seq: 0, ack: 0xffffffff,
      flags: TCP_ACK | TCP_PSH | TCP_URG, window: 0, urgentPointer: 7, payloadLength: payload.length, payload,
    });
  });

  it('IPv4 header options (IHL > 5) are skipped', () => {
    for (const ipOptions of [[1, 1, 1, 0], [7, 7, 4, 0, 0, 0, 0], Array<number>(40).fill(1)]) {
      const b = buildFrame({ ...V4, ipOptions, options: opt.mss(536), payload: Buffer.from([9, 8, 7]) });
      expect(parseBoth(b)).toMatchObject({ family: 4, sport: 40000, dport: 7000, mss: 536, payloadLength: 3, payload: Buffer.from([9, 8, 7]) });
    }
  });

  it('Ethernet padding after the IP packet is not payload', () => {
    const b = buildFrame({ ...V4, flags: TCP_RST, trailer: Array<number>(6).fill(0xee) });
    expect(b.length).toBe(60);
    const s = parseBoth(b);
    expect(s).toMatchObject({ flags: TCP_RST, payloadLength: 0 });
    expect(s?.payload).toBeUndefined();
  });

  it('IPv6, plain and through hop-by-hop, routing and destination-options headers', () => {
    const payload = Buffer.from([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    const want = {
      family: 6, src: 'fd7a:6b00::1', dst: 'fd7a:6b00:0:1::abcd', sport: 443, dport: 51000, seq: 123456789, ack: 987654321,
      flags: TCP_ACK | TCP_FIN, window: 1024, urgentPointer: 0, payloadLength: 10, payload, tsval: 1, tsecr: 2,
    };
    const base = { ...V6, sport: 443, dport: 51000, seq: 123456789, ack: 987654321, flags: TCP_ACK | TCP_FIN, window: 1024, options: [...opt.nop(), ...opt.nop(), ...opt.ts(1, 2)], payload };
    expect(parseBoth(buildFrame(base))).toEqual(want);
    for (const ipv6Ext of [[{ type: 0 }], [{ type: 60, len8: 2 }], [{ type: 0 }, { type: 43, len8: 1 }, { type: 60 }]]) {
      expect(parseBoth(buildFrame({ ...base, ipv6Ext }))).toEqual(want);
    }
  });

  it('802.1Q tags (one and two) before IPv4 and IPv6', () => {
    for (const vlans of [[7], [100, 4094]]) {
      expect(parseBoth(buildFrame({ ...V4, vlans, flags: TCP_SYN, options: opt.mss(1400) }))).toMatchObject({ family: 4, flags: TCP_SYN, mss: 1400 });
      expect(parseBoth(buildFrame({ ...V6, vlans, ipv6Ext: [{ type: 0 }] }))).toMatchObject({ family: 6, src: 'fd7a:6b00::1' });
    }
    // Three tags are more than a frame carries: the parser stops following at two.
    expect(parse(buildFrame({ ...V4, vlans: [1, 2, 3] }))).toBeNull();
  });

  it('raw IP link type (no link header), both families', () => {
    const b4 = buildFrame({ ...V4, link: 'raw', options: opt.ws(2) });
    const b6 = buildFrame({ ...V6, link: 'raw', ipv6Ext: [{ type: 60 }] });
    expect(parseBoth(b4, LINK_RAW_IP)).toMatchObject({ family: 4, src: '198.18.0.1', wscale: 2 });
    expect(parseBoth(b6, LINK_RAW_IP)).toMatchObject({ family: 6, dst: 'fd7a:6b00:0:1::abcd' });
    // The same bytes read with the wrong link type are not TCP.
    expect(parse(b4, LINK_ETHERNET)).toBeNull();
    expect(parse(buildFrame(V4), LINK_RAW_IP)).toBeNull();
  });

  it('window scale above 14 is taken as 14 (RFC 7323); 14 and 0 as they are', () => {
    for (const [shift, want] of [[0, 0], [14, 14], [15, 14], [200, 14], [255, 14]] as const) {
      expect(parseBoth(buildFrame({ ...V4, flags: TCP_SYN, options: opt.ws(shift) }))?.wscale).toBe(want);
    }
  });

  it('unknown options, SACK blocks and EOL are skipped by length; bytes after EOL are ignored', () => {
    const options = [...opt.sack([[1, 2], [3, 4]]), ...opt.raw(30, 4, 0xaa, 0xbb), ...opt.mss(1200), ...opt.eol(), 0xff, 0xff, 0xff];
    expect(parseBoth(buildFrame({ ...V4, options }))).toMatchObject({ mss: 1200 });
    expect(parseBoth(buildFrame({ ...V4, options }))?.wscale).toBeUndefined();
    // A NOP-only list and an EOL-only list.
    expect(parseBoth(buildFrame({ ...V4, options: [1, 1, 1, 1] }))).not.toBeNull();
    expect(parseBoth(buildFrame({ ...V4, options: [0, 0, 0, 0] }))).not.toBeNull();
  });

  it('the payload is a copy of the frame bytes, also from a Uint8Array view at an offset', () => {
    const payload = Buffer.from(Array.from({ length: 300 }, (_, i) => i & 0xff));
    const b = buildFrame({ ...V6, payload });
    const backing = new Uint8Array(b.length + 13);
    backing.set(b, 13);
    const view = backing.subarray(13);
    const s = parseBoth(view);
    expect(s?.payload).toEqual(payload);
    backing[backing.length - 1] = backing[backing.length - 1]! ^ 0xff;
    expect(s?.payload).toEqual(payload);
  });
});

describe('parsePacket: rejected frames', () => {
  const goods: Array<[string, Buffer, number]> = [
    ['v4 options+payload', buildFrame({ ...V4, ipOptions: [1, 1, 1, 1], options: [...opt.mss(1460), ...opt.ws(3)], payload: Buffer.from('abc') }), LINK_ETHERNET],
    ['v6 ext vlan', buildFrame({ ...V6, vlans: [5], ipv6Ext: [{ type: 0 }, { type: 60, len8: 1 }], options: opt.ts(5, 6), payload: Buffer.from('xy') }), LINK_ETHERNET],
    ['v4 raw', buildFrame({ ...V4, link: 'raw', options: opt.sackPerm() }), LINK_RAW_IP],
    ['v6 raw', buildFrame({ ...V6, link: 'raw', payload: Buffer.from('z') }), LINK_RAW_IP],
  ];

  it('every truncation of valid frames (all prefixes)', () => {
    for (const [name, b, link] of goods) {
      expect(parse(b, link, true), name).not.toBeNull();
      for (let n = 0; n < b.length; n++) {
        const cut = b.subarray(0, n);
        // The IP length fields say more than is there: rejected with or without checksums.
        expect(parse(cut, link, false), `${name} cut at ${n}`).toBeNull();
        expect(parse(cut, link, true), `${name} cut at ${n}`).toBeNull();
      }
    }
  });

  it('IP length fields larger than the frame; too small for the headers', () => {
    const info = buildFrameInfo({ ...V4, payload: Buffer.from('abcd') });
    const total = info.frame.length - 14;
    expect(parse(buildFrame({ ...V4, payload: Buffer.from('abcd'), totalLength: total }))).not.toBeNull();
    expect(parse(buildFrame({ ...V4, payload: Buffer.from('abcd'), totalLength: total + 1 }))).toBeNull();
    expect(parse(buildFrame({ ...V4, payload: Buffer.from('abcd'), totalLength: 0xffff }))).toBeNull();
    // Smaller than IP + TCP headers, or than the IP header alone.
    expect(parse(buildFrame({ ...V4, totalLength: 39 }))).toBeNull();
    expect(parse(buildFrame({ ...V4, totalLength: 19 }))).toBeNull();
    expect(parse(buildFrame({ ...V4, totalLength: 0 }))).toBeNull();
    // A shorter total length than the frame is fine (what follows is padding) but then the
    // payload is cut to it.
    expect(parse(buildFrame({ ...V4, payload: Buffer.from('abcd'), totalLength: total - 4 }))).toMatchObject({ payloadLength: 0 });
    expect(parse(buildFrame({ ...V4, payload: Buffer.from('abcd'), totalLength: total - 4 }), LINK_ETHERNET, true)).toBeNull(); // checksum covered 4 more bytes

    const v6len = buildFrame({ ...V6, payload: Buffer.from('abcd') }).length - 14 - 40;
    expect(parse(buildFrame({ ...V6, payload: Buffer.from('abcd'), totalLength: v6len + 1 }))).toBeNull();
    expect(parse(buildFrame({ ...V6, totalLength: 19 }))).toBeNull();
    expect(parse(buildFrame({ ...V6, ipv6Ext: [{ type: 0 }], totalLength: 7 }))).toBeNull();
    expect(parse(buildFrame({ ...V6, ipv6Ext: [{ type: 0, len8: 3 }], totalLength: 31 }))).toBeNull();
  });

  it('IHL below 5, or beyond the frame', () => {
    for (const ihl of [0, 1, 4]) expect(parse(buildFrame({ ...V4, ihl }))).toBeNull();
    expect(parse(buildFrame({ ...V4, ihl: 15 }))).toBeNull(); // 60 bytes of header: eats TCP
  });

  it('wrong IP version inside the right ethertype', () => {
    expect(parse(buildFrame({ ...V4, ipVersion: 6 }))).toBeNull();
    expect(parse(buildFrame({ ...V6, ipVersion: 4 }))).toBeNull();
    expect(parse(buildFrame({ ...V4, link: 'raw', ipVersion: 5 }), LINK_RAW_IP)).toBeNull();
    expect(parse(buildFrame({ ...V4, link: 'raw', ipVersion: 0 }), LINK_RAW_IP)).toBeNull();
  });

  it('TCP data offset below 5 or beyond the segment', () => {
    for (const dataOffset of [0, 1, 4]) expect(parse(buildFrame({ ...V4, dataOffset }))).toBeNull();
    expect(parse(buildFrame({ ...V4, dataOffset: 6 }))).toBeNull(); // 24 > 20-byte segment
    expect(parse(buildFrame({ ...V6, dataOffset: 15, payload: Buffer.alloc(39) }))).toBeNull(); // 60 > 59
    expect(parse(buildFrame({ ...V6, dataOffset: 15, options: [1, 1, 1, 1], payload: Buffer.alloc(36) }))).not.toBeNull(); // 60 = 60
  });

  it('option lengths: past the header, below 2, a kind with no length byte', () => {
    expect(parse(buildFrame({ ...V4, options: [...opt.nop(), ...opt.nop(), ...opt.sackPerm()] }))).toMatchObject({ sackPermitted: true });
    expect(parse(buildFrame({ ...V4, options: [...opt.nop(), ...opt.nop(), 2, 4] }))).toBeNull(); // MSS of 4 in 2 bytes
    expect(parse(buildFrame({ ...V4, options: [1, 1, 1, 2] }))).toBeNull(); // MSS kind as the last byte
    expect(parse(buildFrame({ ...V4, options: [1, 1, 30, 3] }))).toBeNull(); // unknown kind, length past the end
    expect(parse(buildFrame({ ...V4, options: [1, 5, 10, 0, 0, 0, 0, 0] }))).toBeNull(); // SACK of 10 in 7 bytes
    expect(parse(buildFrame({ ...V4, options: [30, 0, 1, 1] }))).toBeNull();
    expect(parse(buildFrame({ ...V4, options: [30, 1, 1, 1] }))).toBeNull();
    expect(parse(buildFrame({ ...V4, options: [30, 2, 1, 1] }))).not.toBeNull();
    // A length running past the header into the payload is still past the header.
    expect(parse(buildFrame({ ...V4, options: [1, 1, 8, 10], payload: Buffer.alloc(20) }))).toBeNull();
  });

  it('wrong lengths for MSS, window scale, SACK-permitted and timestamps', () => {
    const bad: number[][] = [
      [2, 3, 5, 1], [2, 5, 5, 0xb4, 0, 1, 1, 1], [2, 2, 1, 1],
      [3, 2, 1, 1], [3, 4, 7, 0],
      [4, 3, 0, 1], [4, 4, 0, 0],
      [8, 8, 0, 0, 0, 1, 0, 0], [8, 12, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0], [8, 9, 0, 0, 0, 1, 0, 0, 0, 1, 1, 1],
    ];
    for (const options of bad) expect(parse(buildFrame({ ...V4, options })), JSON.stringify(options)).toBeNull();
  });

  it('IPv4 fragments: more-fragments or any offset; DF alone and no flags are fine', () => {
    for (const fragField of [0x2000, 0x0001, 0x1fff, 0x2001, 0x6000, 0x4001]) {
      expect(parse(buildFrame({ ...V4, fragField })), fragField.toString(16)).toBeNull();
    }
    expect(parse(buildFrame({ ...V4, fragField: 0 }))).not.toBeNull();
    expect(parse(buildFrame({ ...V4, fragField: 0x4000 }))).not.toBeNull();
    expect(parse(buildFrame({ ...V4, fragField: 0x8000 }))).not.toBeNull(); // reserved bit: not a fragment
  });

  it('IPv6 fragment header, ESP, no-next-header, or too many extension headers', () => {
    expect(parse(buildFrame({ ...V6, ipv6Ext: [{ type: 44 }] }))).toBeNull();
    expect(parse(buildFrame({ ...V6, ipv6Ext: [{ type: 0 }, { type: 44 }] }))).toBeNull();
    expect(parse(buildFrame({ ...V6, ipv6Ext: [{ type: 50 }] }))).toBeNull();
    expect(parse(buildFrame({ ...V6, protocol: 59 }))).toBeNull();
    expect(parse(buildFrame({ ...V6, ipv6Ext: Array.from({ length: 8 }, () => ({ type: 60 })) }))).not.toBeNull();
    expect(parse(buildFrame({ ...V6, ipv6Ext: Array.from({ length: 9 }, () => ({ type: 60 })) }))).toBeNull();
  });

  it('protocols other than TCP', () => {
    for (const protocol of [1, 17, 41, 47, 58, 132, 255]) {
      expect(parse(buildFrame({ ...V4, protocol }))).toBeNull();
      expect(parse(buildFrame({ ...V6, protocol }))).toBeNull();
      expect(parse(buildFrame({ ...V6, protocol, ipv6Ext: [{ type: 0 }] }))).toBeNull();
    }
  });

  it('zero ports', () => {
    expect(parse(buildFrame({ ...V4, sport: 0 }))).toBeNull();
    expect(parse(buildFrame({ ...V4, dport: 0 }))).toBeNull();
    expect(parse(buildFrame({ ...V6, sport: 0, dport: 0 }))).toBeNull();
  });

  it('ethertypes other than IPv4/IPv6 (ARP, IPX, MPLS...), also behind a VLAN tag', () => {
    for (const ethertype of [0x0806, 0x8137, 0x8847, 0x88cc, 0x0000, 0xffff, 0x86de, 0x0801]) {
      expect(parse(buildFrame({ ...V4, ethertype }))).toBeNull();
      expect(parse(buildFrame({ ...V6, ethertype, vlans: [3] }))).toBeNull();
    }
    // Mislabelled families.
    expect(parse(buildFrame({ ...V4, ethertype: 0x86dd }))).toBeNull();
    expect(parse(buildFrame({ ...V6, ethertype: 0x0800 }))).toBeNull();
  });

  it('checksums: a wrong one is rejected only with verifyChecksum; 0xffff for 0 is accepted', () => {
    for (const spec of [{ ...V4, payload: Buffer.from('hello') }, { ...V6, ipv6Ext: [{ type: 0 }], payload: Buffer.from('hello!') }]) {
      const info = buildFrameInfo(spec);
      const good = info.frame;
      const sum = good.readUInt16BE(info.tcpOffset + 16);
      expect(parse(good, LINK_ETHERNET, true)).not.toBeNull();
      for (const wrong of [sum ^ 1, sum ^ 0x8000, (sum + 1) & 0xffff, 0]) {
        if (wrong === sum || (sum === 0xffff && wrong === 0)) continue;
        const b = Buffer.from(good);
        b.writeUInt16BE(wrong, info.tcpOffset + 16);
        expect(parse(b, LINK_ETHERNET, false)).not.toBeNull();
        expect(parse(b, LINK_ETHERNET, true)).toBeNull();
      }
      // Any single bit flipped in the pseudo-header addresses or the segment breaks the sum.
      const addrAt = info.ipOffset + (spec.src.includes(':') ? 8 : 12);
      for (const at of [addrAt, addrAt + 3, info.tcpOffset, info.tcpOffset + 4, info.tcpOffset + 13, good.length - 1]) {
        const b = Buffer.from(good);
        b[at] = b[at]! ^ 0x04;
        expect(parse(b, LINK_ETHERNET, true), `flip at ${at}`).toBeNull();
      }
    }
    // The complement of 0 may be written either way (one's complement has two zeros): a
    // segment whose checksum is 0 (its low seq word set to the checksum it had with 0 there
    // makes the sum 0xffff), written as 0xffff.
    const first = buildFrameInfo({ ...V4, seq: 0 });
    const seq = first.frame.readUInt16BE(first.tcpOffset + 16);
    const info = buildFrameInfo({ ...V4, seq });
    expect(info.frame.readUInt16BE(info.tcpOffset + 16)).toBe(0);
    expect(parse(info.frame, LINK_ETHERNET, true)).toMatchObject({ seq });
    const b = Buffer.from(info.frame);
    b.writeUInt16BE(0xffff, info.tcpOffset + 16);
    expect(parse(b, LINK_ETHERNET, true)).toMatchObject({ seq });
  });
});

describe('parsePacket: seeded random frames', () => {
  it('~20k noise, mutated and truncated frames: never throws; accepted results are consistent', () => {
    const rnd = mulberry32(0x7a6b0001);
    const r = (n: number) => rnd() % n;
    const seeds: Array<[Buffer, 0 | 1]> = [
      [buildFrame({ ...V4, flags: TCP_SYN, options: [...opt.mss(1460), ...opt.sackPerm(), ...opt.ts(1, 0), ...opt.nop(), ...opt.ws(7)] }), 1],
      [buildFrame({ ...V4, flags: TCP_ACK | TCP_PSH, ipOptions: [1, 1, 1, 0], payload: Buffer.from('some payload bytes') }), 1],
      [buildFrame({ ...V6, flags: TCP_ACK, vlans: [9], ipv6Ext: [{ type: 0 }, { type: 60, len8: 1 }], options: opt.sack([[5, 9]]), payload: Buffer.from('x') }), 1],
      [buildFrame({ ...V6, flags: TCP_FIN | TCP_ACK, options: opt.ts(7, 8) }), 1],
      [buildFrame({ ...V4, link: 'raw', flags: TCP_RST }), 0],
      [buildFrame({ ...V6, link: 'raw', flags: TCP_SYN | TCP_ACK, options: opt.mss(1220), payload: Buffer.alloc(33, 0x55) }), 0],
    ];
    let accepted = 0;
    let acceptedMutated = 0;
    let acceptedMutatedVerified = 0;
    const problems: string[] = [];
    const n = 20000;
    for (let i = 0; i < n; i++) {
      let b: Buffer;
      let link: 0 | 1;
      const kind = r(10);
      if (kind === 0) {
        b = Buffer.alloc(r(120));
        for (let j = 0; j < b.length; j++) b[j] = r(256);
        link = r(2) as 0 | 1;
      } else {
        const [seed, seedLink] = seeds[r(seeds.length)]!;
        b = Buffer.from(seed);
        link = r(16) === 0 ? ((1 - seedLink) as 0 | 1) : seedLink;
        const edits = 1 + r(4);
        for (let e = 0; e < edits && b.length > 0; e++) {
          const m = r(4);
          if (m === 0) {
            const at = r(b.length);
            b[at] = b[at]! ^ (1 << r(8));
          }
          else if (m === 1) b[r(b.length)] = r(256);
          else if (m === 2) b = b.subarray(0, r(b.length + 1));
          else {
            // Small values where lengths and offsets live.
            b[r(Math.min(b.length, 80))] = r(16);
          }
        }
        // A third of the mutated frames get a right checksum back, so mutations of options
        // and lengths also reach the verified path.
        if (r(3) === 0) fixTcpChecksum(b, link);
      }
      const verify = r(2) === 0;
      let seg: ParsedSegment | null;
      try {
        seg = parse(b, link, verify);
      } catch (e) {
        problems.push(`threw ${String(e)} on ${b.toString('hex')}`);
        continue;
      }
      if (!seg) continue;
      accepted++;
      if (kind !== 0) acceptedMutated++;
      const bad = (what: string) => problems.push(`${what}: link ${link} verify ${verify} ${b.toString('hex')} -> ${JSON.stringify(seg)}`);
      if (seg.family !== 4 && seg.family !== 6) bad('family');
      if (!(seg.sport > 0 && seg.sport <= 0xffff && seg.dport > 0 && seg.dport <= 0xffff)) bad('ports');
      for (const v of [seg.seq, seg.ack]) if (!(Number.isInteger(v) && v >= 0 && v <= 0xffffffff)) bad('seq/ack');
      if (!(seg.flags >= 0 && seg.flags <= 0xff && seg.window >= 0 && seg.window <= 0xffff)) bad('flags/window');
      if (seg.wscale !== undefined && !(seg.wscale >= 0 && seg.wscale <= 14)) bad('wscale');
      const got = seg.payload?.length ?? 0;
      if (got > seg.payloadLength) bad('payload longer than payloadLength');
      const loc = locateTcp(b, link);
      if (!loc) {
        bad('the reference locator finds no segment');
        continue;
      }
      if (loc.family !== seg.family) bad('family differs from the reference');
      if (seg.payloadLength > loc.tcpLength - 20) bad('payloadLength beyond the segment');
      if (verify) {
        if (kind !== 0) acceptedMutatedVerified++;
        if (got !== seg.payloadLength) bad('verified segment without its whole payload');
        if (!tcpChecksumOk(b, loc)) bad('accepted with a wrong checksum');
        const end = loc.tcpOffset + loc.tcpLength;
        if (got > 0 && !seg.payload!.equals(b.subarray(end - got, end))) bad('payload bytes differ');
      }
    }
    expect(problems.slice(0, 5)).toEqual([]);
    // The run means something only if mutated frames do get through now and then.
    expect(acceptedMutated).toBeGreaterThan(500);
    expect(acceptedMutatedVerified).toBeGreaterThan(1000);
    expect(accepted).toBeLessThan(n);
  });
});
