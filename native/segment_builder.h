// Byte-level builder of one forged TCP segment with its IPv4 or IPv6 header. Plain C++ over a
// plain struct (no Napi), so the fuzz driver and any unit driver can call it directly; all
// validation of JS input happens in forge.cc before a SegmentFields is filled.
#pragma once
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "inet_checksum.h"

namespace takeover {

inline constexpr size_t kIpv4HeaderLen = 20;
inline constexpr size_t kIpv6HeaderLen = 40;
inline constexpr size_t kTcpHeaderLen = 20;
inline constexpr size_t kTcpTimestampOptionLen = 12;  // NOP, NOP, kind 8, len 10, TSval, TSecr
// Keeps every forged packet under a 1500-byte MTU with room for both headers and options.
inline constexpr size_t kMaxForgedPayload = 1400;
inline constexpr size_t kMaxForgedPacket =
    kIpv6HeaderLen + kTcpHeaderLen + kTcpTimestampOptionLen + kMaxForgedPayload;

struct SegmentFields {
  int family = AF_INET;  // AF_INET or AF_INET6
  uint8_t src[16] = {};  // network order; only the first 4 bytes are used for AF_INET
  uint8_t dst[16] = {};
  uint16_t sport = 0;
  uint16_t dport = 0;
  uint32_t seq = 0;
  uint32_t ack = 0;
  uint8_t flags = 0;
  uint16_t window = 65535;
  uint16_t urgentPointer = 0;
  uint8_t ttl = 64;  // IPv4 TTL or IPv6 hop limit
  uint16_t ipId = 0;  // IPv4 only; 0 lets a raw socket's kernel pick one
  bool timestamp = false;
  uint32_t tsval = 0;
  uint32_t tsecr = 0;
  const uint8_t* payload = nullptr;
  size_t payloadLen = 0;
};

inline size_t SegmentLength(const SegmentFields& f) {
  size_t ip = f.family == AF_INET6 ? kIpv6HeaderLen : kIpv4HeaderLen;
  return ip + kTcpHeaderLen + (f.timestamp ? kTcpTimestampOptionLen : 0) + f.payloadLen;
}

// Writes the packet into out and returns its length, or 0 when out is too small, the family
// is unknown or the payload exceeds kMaxForgedPayload (callers validate first; this only keeps
// a fuzzer from writing out of bounds).
inline size_t BuildSegment(const SegmentFields& f, std::span<uint8_t> out) {
  if (f.family != AF_INET && f.family != AF_INET6) return 0;
  if (f.payloadLen > kMaxForgedPayload || (f.payloadLen > 0 && f.payload == nullptr)) return 0;
  const size_t total = SegmentLength(f);
  if (out.size() < total) return 0;
  uint8_t* p = out.data();
  std::memset(p, 0, total - f.payloadLen);

  const bool v6 = f.family == AF_INET6;
  const size_t ipLen = v6 ? kIpv6HeaderLen : kIpv4HeaderLen;
  const size_t addrLen = v6 ? 16 : 4;
  // The TCP option block is already a multiple of 4 bytes, so no extra padding is needed.
  const size_t tcpHeaderLen = kTcpHeaderLen + (f.timestamp ? kTcpTimestampOptionLen : 0);
  const size_t tcpLen = tcpHeaderLen + f.payloadLen;

  if (v6) {
    p[0] = 0x60;  // version 6, traffic class 0, flow label 0
    PutBe16(p + 4, static_cast<uint16_t>(tcpLen));
    p[6] = IPPROTO_TCP;
    p[7] = f.ttl;
    std::memcpy(p + 8, f.src, 16);
    std::memcpy(p + 24, f.dst, 16);
  } else {
    p[0] = 0x45;  // version 4, IHL 5 (no options)
    PutBe16(p + 2, static_cast<uint16_t>(total));
    PutBe16(p + 4, f.ipId);
    p[6] = 0x40;  // DF: a forged control segment must never be fragmented on the way
    p[8] = f.ttl;
    p[9] = IPPROTO_TCP;
    std::memcpy(p + 12, f.src, 4);
    std::memcpy(p + 16, f.dst, 4);
    InetChecksum ipSum;
    ipSum.Add(p, kIpv4HeaderLen);
    PutBe16(p + 10, ipSum.Finish());
  }

  uint8_t* t = p + ipLen;
  PutBe16(t, f.sport);
  PutBe16(t + 2, f.dport);
  PutBe32(t + 4, f.seq);
  PutBe32(t + 8, f.ack);
  t[12] = static_cast<uint8_t>((tcpHeaderLen / 4) << 4);
  t[13] = f.flags;
  PutBe16(t + 14, f.window);
  PutBe16(t + 18, f.urgentPointer);
  if (f.timestamp) {
    t[20] = 1;  // NOP
    t[21] = 1;  // NOP: the two NOPs align TSval on a 4-byte boundary, as every stack does
    t[22] = 8;  // kind: timestamps
    t[23] = 10;
    PutBe32(t + 24, f.tsval);
    PutBe32(t + 28, f.tsecr);
  }
  if (f.payloadLen > 0) std::memcpy(t + tcpHeaderLen, f.payload, f.payloadLen);

  // TCP checksum over the pseudo-header (RFC 793 for IPv4, RFC 8200 section 8.1 for IPv6).
  InetChecksum sum;
  sum.Add(f.src, addrLen);
  sum.Add(f.dst, addrLen);
  sum.Add32(static_cast<uint32_t>(tcpLen));
  sum.Add16(IPPROTO_TCP);
  sum.Add(t, tcpLen);
  PutBe16(t + 16, sum.Finish());
  return total;
}

}  // namespace takeover
