// The flow table: what the wire has shown of each TCP connection, per direction. Plain C++
// (no Napi) so the fuzz driver exercises it; capture.cc feeds it and snapshots it for JS.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string_view>
#include <unordered_map>

#include "packet_parse.h"

namespace takeover {

enum class FlowState : uint8_t { kSynSent, kSynReceived, kEstablished, kFinWait, kClosing, kClosed, kReset };
const char* FlowStateName(FlowState s);

struct FlowEndpoint {
  uint8_t addr[16] = {};
  uint16_t port = 0;
};

struct FlowSideState {
  FlowEndpoint ep;
  uint32_t nextSeq = 0;  // seq after the last byte (SYN/FIN count) this side sent, highest seen
  uint32_t ack = 0;      // highest ack this side sent
  bool seqKnown = false;
  bool ackKnown = false;
  uint32_t rawWindow = 0;  // last window field as sent
  bool windowFromSyn = false;  // rawWindow came from a SYN, whose window is never scaled (RFC 7323)
  int8_t wscaleOption = -1;  // from this side's SYN; -1 none
  bool synSeen = false;
  uint16_t mss = 0;
  bool sackPermitted = false;
  bool tsKnown = false;
  uint32_t tsval = 0;
  uint32_t tsecr = 0;
  bool finSent = false;
  double lastSeenMs = 0;
  uint64_t packets = 0;
  uint64_t bytes = 0;
};

struct Flow {
  int family = 4;
  FlowSideState a;  // the SYN's sender when the handshake was seen, else the first sender seen
  FlowSideState b;
  FlowState state = FlowState::kEstablished;
  bool handshakeSeen = false;
  double firstSeenMs = 0;
  double lastSeenMs = 0;
  // The table's generation at this flow's last update: "changed since" without trusting the
  // capture timestamps, which a ring hands over late.
  uint64_t updated = 0;

  // The shift for a side's non-SYN windows: both SYNs seen; 0 when either lacked the option
  // (RFC 7323: scaling is on only when both offered it); -1 when unknown.
  int WindowShift(const FlowSideState& side) const;
  uint32_t ScaledWindow(const FlowSideState& side) const;
};

struct FlowKey {
  int family = 4;
  FlowEndpoint lo;  // the endpoints in a fixed order, so both directions find one flow
  FlowEndpoint hi;
  bool operator==(const FlowKey& o) const;
};

struct FlowKeyHash {
  size_t operator()(const FlowKey& k) const;
};

struct FlowTableStats {
  uint64_t segments = 0;
  uint64_t refusedFull = 0;   // new flows refused because the table was full
  uint64_t ignoredStray = 0;  // segments that may not start a flow (lone RST, no ACK/SYN)
};

class FlowTable {
 public:
  explicit FlowTable(size_t maxFlows = size_t{1} << 20) : max_(maxFlows) {}

  void Update(const TcpSegment& seg, double nowMs);
  // Drops closed/reset flows quiet for closedLingerMs and others quiet for idleMs.
  size_t Expire(double nowMs, double idleMs, double closedLingerMs = 5000);
  size_t size() const { return flows_.size(); }
  // Grows by one per segment that updated a flow.
  uint64_t generation() const { return generation_; }
  const FlowTableStats& stats() const { return stats_; }
  void ForEach(const std::function<void(const Flow&)>& fn) const;
  // The flow between two endpoints (either order), or nullptr.
  const Flow* Find(int family, const FlowEndpoint& x, const FlowEndpoint& y) const;

 private:
  size_t max_;
  uint64_t generation_ = 0;
  std::unordered_map<FlowKey, Flow, FlowKeyHash> flows_;
  FlowTableStats stats_;
};

}  // namespace takeover
