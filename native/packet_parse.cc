#include "packet_parse.h"

#include <cstring>

#include "inet_checksum.h"

namespace takeover {
namespace {

constexpr uint16_t kEtherIpv4 = 0x0800, kEtherIpv6 = 0x86dd, kEtherVlan = 0x8100, kEtherQinQ = 0x88a8;
constexpr uint8_t kProtoTcp = 6;

uint16_t Be16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
uint32_t Be32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) << 24 | static_cast<uint32_t>(p[1]) << 16 | static_cast<uint32_t>(p[2]) << 8 | p[3];
}

// TCP options: a malformed list (a length running past the header) rejects the segment,
// since the kernel would not have built it and a forged one must not create a flow.
bool ParseOptions(const uint8_t* opt, size_t len, TcpSegment& out) {
  size_t i = 0;
  while (i < len) {
    uint8_t kind = opt[i];
    if (kind == 0) break;  // end of option list
    if (kind == 1) {       // NOP
      i++;
      continue;
    }
    if (i + 1 >= len) return false;
    uint8_t olen = opt[i + 1];
    if (olen < 2 || i + olen > len) return false;
    const uint8_t* v = opt + i + 2;
    switch (kind) {
      case 2:
        if (olen != 4) return false;
        out.mss = Be16(v);
        break;
      case 3:
        if (olen != 3) return false;
        out.wscale = static_cast<int8_t>(v[0] > 14 ? 14 : v[0]);  // RFC 7323: larger means 14
        break;
      case 4:
        if (olen != 2) return false;
        out.sackPermitted = true;
        break;
      case 8:
        if (olen != 10) return false;
        out.hasTimestamp = true;
        out.tsval = Be32(v);
        out.tsecr = Be32(v + 4);
        break;
      default:
        break;  // SACK blocks, MD5, TFO...: skipped by length
    }
    i += olen;
  }
  return true;
}

// Sum over pseudo-header and segment, checksum field included: 0 when the checksum is right.
uint16_t TcpChecksum(const TcpSegment& s, const uint8_t* tcp, size_t tcpLen) {
  InetChecksum sum;
  sum.Add(s.src, s.family == 4 ? 4 : 16);
  sum.Add(s.dst, s.family == 4 ? 4 : 16);
  sum.Add32(static_cast<uint32_t>(tcpLen));
  sum.Add16(kProtoTcp);
  sum.Add(tcp, tcpLen);
  return sum.Finish();
}

}  // namespace

bool ParseTcpFrame(std::span<const uint8_t> frame, size_t wireLength, LinkType link, TcpSegment& out,
                   bool verifyChecksum) {
  out = TcpSegment{};
  const uint8_t* p = frame.data();
  size_t cap = frame.size();  // bytes we may read
  if (wireLength < cap) return false;
  size_t off = 0;
  uint16_t ethertype = 0;
  if (link == LinkType::kEthernet) {
    if (cap < 14) return false;
    ethertype = Be16(p + 12);
    off = 14;
    for (int tags = 0; (ethertype == kEtherVlan || ethertype == kEtherQinQ) && tags < 2; tags++) {
      if (cap < off + 4) return false;
      ethertype = Be16(p + off + 2);
      off += 4;
    }
    if (ethertype != kEtherIpv4 && ethertype != kEtherIpv6) return false;
  } else {
    if (cap < 1) return false;
    ethertype = (p[0] >> 4) == 4 ? kEtherIpv4 : (p[0] >> 4) == 6 ? kEtherIpv6 : 0;
    if (ethertype == 0) return false;
  }
  // What the IP header says is on the wire after it must fit in what was on the wire.
  const size_t wireAfterL2 = wireLength - off;
  size_t l4off = 0, l4len = 0;
  if (ethertype == kEtherIpv4) {
    if (cap < off + 20) return false;
    const uint8_t* ip = p + off;
    if ((ip[0] >> 4) != 4) return false;
    size_t ihl = static_cast<size_t>(ip[0] & 0x0f) * 4;
    size_t total = Be16(ip + 2);
    if (ihl < 20 || cap < off + ihl || total < ihl || total > wireAfterL2) return false;
    if (ip[9] != kProtoTcp) return false;
    if (Be16(ip + 6) & 0x3fff) return false;  // MF or a fragment offset: not a whole segment
    out.family = 4;
    std::memcpy(out.src, ip + 12, 4);
    std::memcpy(out.dst, ip + 16, 4);
    l4off = off + ihl;
    l4len = total - ihl;
  } else {
    if (cap < off + 40) return false;
    const uint8_t* ip = p + off;
    if ((ip[0] >> 4) != 6) return false;
    size_t payloadLen = Be16(ip + 4);
    if (40 + payloadLen > wireAfterL2) return false;
    out.family = 6;
    std::memcpy(out.src, ip + 8, 16);
    std::memcpy(out.dst, ip + 24, 16);
    uint8_t next = ip[6];
    size_t hoff = off + 40;
    size_t remaining = payloadLen;
    for (int hops = 0; next != kProtoTcp; hops++) {
      // Hop-by-hop, routing and destination options may precede TCP; a fragment header
      // means no whole segment; anything else is not TCP.
      if (hops >= 8 || (next != 0 && next != 43 && next != 60)) return false;
      if (cap < hoff + 8 || remaining < 8) return false;
      size_t extLen = (static_cast<size_t>(p[hoff + 1]) + 1) * 8;
      if (extLen > remaining || cap < hoff + 2) return false;
      next = p[hoff];
      hoff += extLen;
      remaining -= extLen;
    }
    l4off = hoff;
    l4len = remaining;
  }
  if (l4len < 20 || cap < l4off + 20) return false;
  const uint8_t* tcp = p + l4off;
  size_t doff = static_cast<size_t>(tcp[12] >> 4) * 4;
  if (doff < 20 || doff > l4len || cap < l4off + doff) return false;
  out.sport = Be16(tcp);
  out.dport = Be16(tcp + 2);
  out.seq = Be32(tcp + 4);
  out.ack = Be32(tcp + 8);
  out.flags = tcp[13];
  out.window = Be16(tcp + 14);
  out.urgentPointer = Be16(tcp + 18);
  if (out.sport == 0 || out.dport == 0) return false;
  if (!ParseOptions(tcp + 20, doff - 20, out)) return false;
  out.payloadLength = static_cast<uint32_t>(l4len - doff);
  out.payload = tcp + doff;
  size_t avail = cap - l4off - doff;
  out.payloadCaptured = static_cast<uint32_t>(avail < out.payloadLength ? avail : out.payloadLength);
  if (verifyChecksum) {
    if (out.payloadCaptured != out.payloadLength) return false;
    if (TcpChecksum(out, tcp, l4len) != 0) return false;
  }
  return true;
}

}  // namespace takeover
