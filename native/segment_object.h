// A parsed TCP segment as the JS object ParsedSegment (src/native.ts), shared by the packet
// capture (packet_capture.cc) and the egress hold (nf_queue.cc).
#pragma once
#include <napi.h>

#include <cstdint>
#include <string>

#include "packet_parse.h"

namespace takeover {

// An address of `family` (4 or 6) as text (inet_ntop).
std::string AddressText(int family, const uint8_t* addr);

// The segment's fields; payload copied up to payloadBytes (0: none); timeMs set when > 0.
Napi::Object SegmentObject(Napi::Env env, const TcpSegment& s, double timeMs, uint32_t payloadBytes);

}  // namespace takeover
