// A connection as a ShadowTable sees it on the mirror, for the protocol plugins' plan tests: a
// client and a server whose sequence numbers advance as they send, the handshake already taken
// (MSS 1460, window scale 7, SACK), and whatever the caller's opening adds (a login, say).
import type { ParsedSegment } from '../../src/native.js';
import { TCP_ACK, TCP_PSH, TCP_SYN } from '../../src/native.js';
import { seqAdd } from '../../src/net/seq.js';
import type { ContinuePlugin } from '../../src/net/shadow/exchange-tracker.js';
import { ShadowTable } from '../../src/net/shadow/shadow-table.js';

export const CLIENT = { address: '198.18.5.20', port: 40000 };

/** `seg(fromServer, payload, flags)`: the next segment of that side, acknowledging everything of the other. */
export type SegmentOf = (fromServer: boolean, payload: Buffer, flags?: number) => ParsedSegment;

/**
 * The segments between a client and a server whose sequence numbers advance as they send: the
 * handshake (MSS 1460, window scale 7, SACK, timestamps), then `seg` for each side's next one.
 * Every segment is captured at 1,000,000 ms (spread `timeMs` over it to set another).
 */
export function conversationSegments(server: { address: string; port: number }, client: { address: string; port: number } = CLIENT): { seg: SegmentOf; handshake: ParsedSegment[] } {
  let cNext = 1001;
  let sNext = 5001;
  let ts = 100;
  const seg: SegmentOf = (fromServer, payload, flags = TCP_ACK | TCP_PSH) => {
    const s: ParsedSegment = {
      family: 4,
      src: fromServer ? server.address : client.address,
      dst: fromServer ? client.address : server.address,
      sport: fromServer ? server.port : client.port,
      dport: fromServer ? client.port : server.port,
      seq: fromServer ? sNext : cNext,
      ack: fromServer ? cNext : sNext,
      flags,
      window: 500,
      urgentPointer: 0,
      payloadLength: payload.length,
      payload,
      tsval: ts++,
      tsecr: 1,
      timeMs: 1_000_000,
    };
    if (fromServer) sNext = seqAdd(sNext, payload.length);
    else cNext = seqAdd(cNext, payload.length);
    return s;
  };
  const handshake = [
    { ...seg(false, Buffer.alloc(0), TCP_SYN), seq: 1000, ack: 0, mss: 1460, wscale: 7, sackPermitted: true },
    { ...seg(true, Buffer.alloc(0), TCP_SYN | TCP_ACK), seq: 5000, mss: 1460, wscale: 7, sackPermitted: true },
    seg(false, Buffer.alloc(0), TCP_ACK),
  ];
  return { seg, handshake };
}

export function shadowConversation(plugin: ContinuePlugin, server: { address: string; port: number }, opening: (seg: SegmentOf) => ParsedSegment[] = () => []): { t: ShadowTable; seg: SegmentOf } {
  const { seg, handshake } = conversationSegments(server);
  const t = new ShadowTable({ services: [server], plugin });
  t.segments([...handshake, ...opening(seg)], 1_000_000);
  return { t, seg };
}
