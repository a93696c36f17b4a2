#include "tcp_flows.h"

#include <cstring>

namespace takeover {
namespace {

// RFC 1982 serial-number comparison over 32 bits.
bool SeqAfter(uint32_t a, uint32_t b) { return static_cast<int32_t>(a - b) > 0; }

int CompareEndpoints(const FlowEndpoint& x, const FlowEndpoint& y) {
  int c = std::memcmp(x.addr, y.addr, sizeof x.addr);
  if (c != 0) return c;
  return x.port < y.port ? -1 : x.port > y.port ? 1 : 0;
}

bool SameEndpoint(const FlowEndpoint& x, const FlowEndpoint& y) { return CompareEndpoints(x, y) == 0; }

FlowEndpoint Endpoint(const uint8_t* addr, int family, uint16_t port) {
  FlowEndpoint e;
  std::memcpy(e.addr, addr, family == 4 ? 4 : 16);
  e.port = port;
  return e;
}

void UpdateSide(FlowSideState& side, const TcpSegment& seg, double nowMs) {
  side.packets++;
  side.bytes += seg.payloadLength;
  side.lastSeenMs = nowMs;
  if (!(seg.flags & kRst)) {
    // A RST occupies no sequence space; everything else moves SND.NXT forward, never back
    // (a retransmission ends at or before what we already have).
    uint32_t end = seg.seq + seg.payloadLength + ((seg.flags & kSyn) ? 1 : 0) + ((seg.flags & kFin) ? 1 : 0);
    if (!side.seqKnown || SeqAfter(end, side.nextSeq)) side.nextSeq = end;
    side.seqKnown = true;
  }
  if (seg.flags & kAck) {
    if (!side.ackKnown || SeqAfter(seg.ack, side.ack)) side.ack = seg.ack;
    side.ackKnown = true;
  }
  side.rawWindow = seg.window;
  side.windowFromSyn = (seg.flags & kSyn) != 0;
  if (seg.flags & kSyn) {
    side.synSeen = true;
    side.wscaleOption = seg.wscale;
    side.mss = seg.mss;
    side.sackPermitted = seg.sackPermitted;
  }
  if (seg.hasTimestamp && (!side.tsKnown || !SeqAfter(side.tsval, seg.tsval))) {
    side.tsval = seg.tsval;
    side.tsecr = seg.tsecr;
    side.tsKnown = true;
  }
  if (seg.flags & kFin) side.finSent = true;
}

// Nothing more will be said on the connection: closed (both FINs acked, or both FINs sent,
// since the last ACK may be lost or unseen) or reset.
bool Finished(const Flow& f) {
  return f.state == FlowState::kClosed || f.state == FlowState::kReset || f.state == FlowState::kClosing;
}

}  // namespace

const char* FlowStateName(FlowState s) {
  switch (s) {
    case FlowState::kSynSent: return "SYN_SENT";
    case FlowState::kSynReceived: return "SYN_RECEIVED";
    case FlowState::kEstablished: return "ESTABLISHED";
    case FlowState::kFinWait: return "FIN_WAIT";
    case FlowState::kClosing: return "CLOSING";
    case FlowState::kClosed: return "CLOSED";
    case FlowState::kReset: return "RESET";
  }
  return "UNKNOWN";
}

int Flow::WindowShift(const FlowSideState& side) const {
  if (!a.synSeen || !b.synSeen) return -1;
  if (a.wscaleOption < 0 || b.wscaleOption < 0) return 0;
  return side.wscaleOption;
}

uint32_t Flow::ScaledWindow(const FlowSideState& side) const {
  if (side.windowFromSyn) return side.rawWindow;
  int shift = WindowShift(side);
  return shift > 0 ? side.rawWindow << shift : side.rawWindow;
}

bool FlowKey::operator==(const FlowKey& o) const {
  return family == o.family && SameEndpoint(lo, o.lo) && SameEndpoint(hi, o.hi);
}

size_t FlowKeyHash::operator()(const FlowKey& k) const {
  // FNV-1a over the key bytes: cheap and well spread for addresses that differ in few bytes.
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](const uint8_t* p, size_t n) {
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
  };
  mix(k.lo.addr, sizeof k.lo.addr);
  mix(k.hi.addr, sizeof k.hi.addr);
  const uint8_t ports[5] = {static_cast<uint8_t>(k.lo.port >> 8), static_cast<uint8_t>(k.lo.port),
                            static_cast<uint8_t>(k.hi.port >> 8), static_cast<uint8_t>(k.hi.port),
                            static_cast<uint8_t>(k.family)};
  mix(ports, sizeof ports);
  return static_cast<size_t>(h);
}

void FlowTable::Update(const TcpSegment& seg, double nowMs) {
  stats_.segments++;
  FlowEndpoint src = Endpoint(seg.src, seg.family, seg.sport);
  FlowEndpoint dst = Endpoint(seg.dst, seg.family, seg.dport);
  FlowKey key;
  key.family = seg.family;
  bool srcLow = CompareEndpoints(src, dst) <= 0;
  key.lo = srcLow ? src : dst;
  key.hi = srcLow ? dst : src;

  auto it = flows_.find(key);
  // A SYN on a finished flow's 4-tuple is a new connection (a client reusing its port, e.g.
  // out of TIME_WAIT, within the linger): its sequence space is unrelated to the old one, and
  // serial comparison against the old nextSeq would keep stale values half of the time.
  // Only finished flows are restarted, so a stray SYN cannot wipe a live flow's state.
  if (it != flows_.end() && (seg.flags & kSyn) && !(seg.flags & (kAck | kRst)) && Finished(it->second)) {
    flows_.erase(it);
    it = flows_.end();
  }
  if (it == flows_.end()) {
    // Only a SYN or a segment with an ACK can belong to a connection; a lone RST, or anything
    // else, says nothing true about one (and is how a forger would fill the table).
    if ((seg.flags & kRst) || !(seg.flags & (kSyn | kAck))) {
      stats_.ignoredStray++;
      return;
    }
    if (flows_.size() >= max_) {
      stats_.refusedFull++;
      return;
    }
    Flow f;
    f.family = seg.family;
    f.firstSeenMs = nowMs;
    bool synOnly = (seg.flags & kSyn) && !(seg.flags & kAck);
    bool synAck = (seg.flags & kSyn) && (seg.flags & kAck);
    // 'a' is the connecting side: the SYN's sender, or the receiver of a SYN-ACK.
    f.a.ep = synAck ? dst : src;
    f.b.ep = synAck ? src : dst;
    f.state = synOnly ? FlowState::kSynSent : synAck ? FlowState::kSynReceived : FlowState::kEstablished;
    f.handshakeSeen = synOnly;
    it = flows_.emplace(key, f).first;
  }
  Flow& f = it->second;
  bool fromA = SameEndpoint(src, f.a.ep);
  UpdateSide(fromA ? f.a : f.b, seg, nowMs);
  f.lastSeenMs = nowMs;
  f.updated = ++generation_;

  if (seg.flags & kRst) {
    f.state = FlowState::kReset;
    return;
  }
  switch (f.state) {
    case FlowState::kSynSent:
      if (!fromA && (seg.flags & kSyn) && (seg.flags & kAck)) f.state = FlowState::kSynReceived;
      break;
    case FlowState::kSynReceived:
      if (fromA && !(seg.flags & kSyn) && (seg.flags & kAck)) f.state = FlowState::kEstablished;
      break;
    default:
      break;
  }
  if (f.a.finSent || f.b.finSent) {
    if (f.state == FlowState::kEstablished || f.state == FlowState::kSynReceived) f.state = FlowState::kFinWait;
    if (f.a.finSent && f.b.finSent && f.state == FlowState::kFinWait) f.state = FlowState::kClosing;
    // Both FINs acknowledged: nothing more can be said on this connection.
    if (f.state == FlowState::kClosing && f.a.ackKnown && f.b.ackKnown && f.a.ack == f.b.nextSeq &&
        f.b.ack == f.a.nextSeq)
      f.state = FlowState::kClosed;
  }
}

size_t FlowTable::Expire(double nowMs, double idleMs, double closedLingerMs) {
  size_t removed = 0;
  for (auto it = flows_.begin(); it != flows_.end();) {
    const Flow& f = it->second;
    bool finished = f.state == FlowState::kClosed || f.state == FlowState::kReset;
    if (nowMs - f.lastSeenMs > (finished ? closedLingerMs : idleMs)) {
      it = flows_.erase(it);
      removed++;
    } else {
      ++it;
    }
  }
  return removed;
}

const Flow* FlowTable::Find(int family, const FlowEndpoint& x, const FlowEndpoint& y) const {
  FlowKey key;
  key.family = family;
  bool xLow = CompareEndpoints(x, y) <= 0;
  key.lo = xLow ? x : y;
  key.hi = xLow ? y : x;
  auto it = flows_.find(key);
  return it == flows_.end() ? nullptr : &it->second;
}

void FlowTable::ForEach(const std::function<void(const Flow&)>& fn) const {
  for (const auto& [key, flow] : flows_) fn(flow);
}

}  // namespace takeover
