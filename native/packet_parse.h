// Parser of one captured frame down to its TCP header and options. Plain C++ over a byte span
// (no Napi), so the fuzz driver calls exactly what the capture calls. It never reads past the
// span and accepts only a well-formed, unfragmented TCP segment over IPv4 or IPv6.
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>

namespace takeover {

enum class LinkType { kRawIp = 0, kEthernet = 1 };

struct TcpSegment {
  int family = 0;  // 4 or 6
  uint8_t src[16] = {};
  uint8_t dst[16] = {};
  uint16_t sport = 0;
  uint16_t dport = 0;
  uint32_t seq = 0;
  uint32_t ack = 0;
  uint8_t flags = 0;
  uint16_t window = 0;
  uint16_t urgentPointer = 0;
  uint16_t mss = 0;    // 0: no MSS option
  int8_t wscale = -1;  // -1: no window scale option
  bool sackPermitted = false;
  bool hasTimestamp = false;
  uint32_t tsval = 0;
  uint32_t tsecr = 0;
  uint32_t payloadLength = 0;    // from the IP length fields
  const uint8_t* payload = nullptr;
  uint32_t payloadCaptured = 0;  // bytes of payload present in the span (snap length)
};

inline constexpr uint8_t kFin = 0x01, kSyn = 0x02, kRst = 0x04, kPsh = 0x08, kAck = 0x10, kUrg = 0x20;

// frame: the captured bytes; wireLength: the frame's length on the wire (>= frame.size()).
// verifyChecksum needs the whole segment captured; a partial or bad checksum is rejected.
bool ParseTcpFrame(std::span<const uint8_t> frame, size_t wireLength, LinkType link, TcpSegment& out,
                   bool verifyChecksum = false);

}  // namespace takeover
