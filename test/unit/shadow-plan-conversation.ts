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

export function shadowConversation(plugin: ContinuePlugin, server: { address: string; port: number }, opening: (seg: SegmentOf) => ParsedSegment[] = () => []): { t: ShadowTable; seg: SegmentOf } {
  let cNext = 1001;
  let sNext = 5001;
  let ts = 100;
  const seg: SegmentOf = (fromServer, payload, flags = TCP_ACK | TCP_PSH) => {
    const s: ParsedSegment = {
      family: 4,
      src: fromServer ? server.address : CLIENT.address,
      dst: fromServer ? CLIENT.address : server.address,
      sport: fromServer ? server.port : CLIENT.port,
      dport: fromServer ? CLIENT.port : server.port,
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
  const t = new ShadowTable({ services: [server], plugin });
  t.segments(
    [
      { ...seg(false, Buffer.alloc(0), TCP_SYN), seq: 1000, ack: 0, mss: 1460, wscale: 7, sackPermitted: true },
      { ...seg(true, Buffer.alloc(0), TCP_SYN | TCP_ACK), seq: 5000, mss: 1460, wscale: 7, sackPermitted: true },
      seg(false, Buffer.alloc(0), TCP_ACK),
      ...opening(seg),
    ],
    1_000_000,
  );
  return { t, seg };
}
