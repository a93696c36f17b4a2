// Fuzz driver for the frame parser (packet_parse.cc) and the flow table (tcp_flows.cc), built
// with ASan + UBSan by run.sh. clang/libFuzzer are not on these machines, so this is a
// deterministic seeded mutation loop: valid frames of several kinds (IPv4 with IP and TCP
// options, IPv6 through extension headers, 802.1Q and QinQ tags, raw IP, payloads of odd and
// even length) are mutated (bit flips, byte and 16-bit field sets with interesting values,
// truncations, extensions, insertions, deletions, splices of other seeds), sometimes given back
// a right IP length and TCP checksum so mutations reach deep, or replaced by noise. Each frame
// goes to ParseTcpFrame with its own and the other link type, with and without checksum
// verification, and with a wire length at or above the captured length; every segment the
// capture would take (no verification, as packet_capture.cc calls it) goes into a FlowTable
// small enough to fill up, expired as time passes. Invariants abort on violation:
//   - the parser is deterministic, accepts only self-consistent segments (family, non-zero
//     ports, payload inside the frame, wscale <= 14), and checksum verification only ever
//     removes acceptances; a verified segment has a right checksum by an independent locator;
//   - a segment the parser rejects never changes the table;
//   - a lone RST, or a segment with neither SYN nor ACK, never creates a flow; one Update
//     creates at most one flow, and only when the table has room;
//   - size() <= max; every flow is self-consistent; Expire leaves no flow idle past its bound;
//     every flow is found by its endpoints; generations are ones the table handed out.
// Usage: fuzz_packets [iterations] [seconds] [seed]
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <span>
#include <vector>

#include "../inet_checksum.h"
#include "../packet_parse.h"
#include "../tcp_flows.h"

using namespace takeover;

namespace {

uint64_t g_iteration = 0;
std::vector<uint8_t> g_frame;  // the frame under test, dumped on failure

[[noreturn]] void Fail(const char* what, int line) {
  std::fprintf(stderr, "fuzz_packets: invariant violated at iteration %" PRIu64 " (line %d): %s\nframe (%zu bytes):", g_iteration,
               line, what, g_frame.size());
  for (uint8_t b : g_frame) std::fprintf(stderr, " %02x", b);
  std::fprintf(stderr, "\n");
  std::abort();
}
#define CHECK(cond) \
  do {              \
    if (!(cond)) Fail(#cond, __LINE__); \
  } while (0)

// xorshift64*: small, seeded, the same sequence everywhere.
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9e3779b97f4a7c15ull + 1) {}
  uint64_t Next() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545f4914f6cdd1dull;
  }
  uint32_t Below(uint32_t n) { return n == 0 ? 0 : static_cast<uint32_t>(Next() % n); }
  bool OneIn(uint32_t n) { return Below(n) == 0; }
};

uint16_t Get16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }

// ---- seed frames --------------------------------------------------------------------------

struct Spec {
  bool v6 = false;
  bool raw = false;  // no Ethernet header
  int vlans = 0;     // 0..2 (the second one as 802.1ad)
  uint8_t flags = kAck;
  std::vector<uint8_t> tcpOptions;
  std::vector<uint8_t> ipOptions;     // IPv4 only
  std::vector<uint8_t> ipv6ExtTypes;  // hop-by-hop 0, routing 43, dest options 60
  size_t payload = 0;
  uint16_t sport = 40000, dport = 7000;
  uint32_t seq = 1000, ack = 2000;
  size_t padding = 0;  // Ethernet trailer
};

struct Seed {
  std::vector<uint8_t> bytes;
  LinkType link;
};

Seed Build(const Spec& s) {
  std::vector<uint8_t> opts = s.tcpOptions;
  while (opts.size() % 4) opts.push_back(1);
  std::vector<uint8_t> ipo = s.ipOptions;
  while (ipo.size() % 4) ipo.push_back(1);
  std::vector<uint8_t> f;
  if (!s.raw) {
    const uint8_t mac[12] = {2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1};
    f.insert(f.end(), mac, mac + 12);
    for (int v = 0; v < s.vlans; v++) f.insert(f.end(), {static_cast<uint8_t>(v == 0 ? 0x88 : 0x81), static_cast<uint8_t>(v == 0 ? 0xa8 : 0x00), 0, 7});
    f.insert(f.end(), {static_cast<uint8_t>(s.v6 ? 0x86 : 0x08), static_cast<uint8_t>(s.v6 ? 0xdd : 0x00)});
  }
  const size_t tcpLen = 20 + opts.size() + s.payload;
  const size_t ip = f.size();
  uint8_t src[16] = {0xfd, 0x7a, 0x6b, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  uint8_t dst[16] = {0xfd, 0x7a, 0x6b, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2};
  if (s.v6) {
    const size_t extLen = 8 * s.ipv6ExtTypes.size();
    f.resize(ip + 40 + extLen);
    f[ip] = 0x60;
    PutBe16(&f[ip + 4], static_cast<uint16_t>(extLen + tcpLen));
    f[ip + 6] = s.ipv6ExtTypes.empty() ? 6 : s.ipv6ExtTypes[0];
    f[ip + 7] = 64;
    std::memcpy(&f[ip + 8], src, 16);
    std::memcpy(&f[ip + 24], dst, 16);
    for (size_t e = 0; e < s.ipv6ExtTypes.size(); e++) {
      uint8_t* h = &f[ip + 40 + 8 * e];
      h[0] = e + 1 < s.ipv6ExtTypes.size() ? s.ipv6ExtTypes[e + 1] : 6;
      h[1] = 0;
      h[2] = 1;  // PadN over the rest
      h[3] = 4;
    }
  } else {
    const size_t hl = 20 + ipo.size();
    f.resize(ip + hl);
    f[ip] = static_cast<uint8_t>(0x40 | hl / 4);
    PutBe16(&f[ip + 2], static_cast<uint16_t>(hl + tcpLen));
    PutBe16(&f[ip + 6], 0x4000);
    f[ip + 8] = 64;
    f[ip + 9] = 6;
    const uint8_t s4[4] = {198, 18, 0, 1}, d4[4] = {198, 19, 0, 2};
    std::memcpy(&f[ip + 12], s4, 4);
    std::memcpy(&f[ip + 16], d4, 4);
    if (!ipo.empty()) std::memcpy(&f[ip + 20], ipo.data(), ipo.size());
    InetChecksum ipsum;
    ipsum.Add(&f[ip], hl);
    PutBe16(&f[ip + 10], ipsum.Finish());
  }
  const size_t t = f.size();
  f.resize(t + tcpLen);
  PutBe16(&f[t], s.sport);
  PutBe16(&f[t + 2], s.dport);
  PutBe32(&f[t + 4], s.seq);
  PutBe32(&f[t + 8], s.ack);
  f[t + 12] = static_cast<uint8_t>(((20 + opts.size()) / 4) << 4);
  f[t + 13] = s.flags;
  PutBe16(&f[t + 14], 65535);
  if (!opts.empty()) std::memcpy(&f[t + 20], opts.data(), opts.size());
  for (size_t i = 0; i < s.payload; i++) f[t + 20 + opts.size() + i] = static_cast<uint8_t>('a' + i % 26);
  f.resize(f.size() + s.padding, 0);
  Seed out{std::move(f), s.raw ? LinkType::kRawIp : LinkType::kEthernet};
  return out;
}

// ---- an independent locator of the TCP segment, for checksums ------------------------------

struct Located {
  int family = 0;
  size_t ip = 0;  // offset of the IP header
  size_t tcp = 0;
  size_t tcpLen = 0;  // from the IP length fields
};

// Written from the RFCs: up to two VLAN tags; IPv6 hop-by-hop, routing and destination options
// (at most 8). False when the frame holds no whole TCP segment's IP framing.
bool Locate(std::span<const uint8_t> f, LinkType link, Located& out) {
  size_t off = 0;
  uint16_t et = 0;
  if (link == LinkType::kEthernet) {
    if (f.size() < 14) return false;
    et = Get16(&f[12]);
    off = 14;
    for (int tags = 0; tags < 2 && (et == 0x8100 || et == 0x88a8); tags++) {
      if (f.size() < off + 4) return false;
      et = Get16(&f[off + 2]);
      off += 4;
    }
  } else {
    if (f.empty()) return false;
    et = (f[0] >> 4) == 4 ? 0x0800 : (f[0] >> 4) == 6 ? 0x86dd : 0;
  }
  out.ip = off;
  if (et == 0x0800) {
    if (f.size() < off + 20 || (f[off] >> 4) != 4) return false;
    size_t ihl = (f[off] & 0xfu) * 4u, total = Get16(&f[off + 2]);
    if (ihl < 20 || total < ihl || off + total > f.size() || f[off + 9] != 6 || (Get16(&f[off + 6]) & 0x3fff)) return false;
    out.family = 4;
    out.tcp = off + ihl;
    out.tcpLen = total - ihl;
    return true;
  }
  if (et == 0x86dd) {
    if (f.size() < off + 40 || (f[off] >> 4) != 6) return false;
    size_t left = Get16(&f[off + 4]);
    if (off + 40 + left > f.size()) return false;
    uint8_t next = f[off + 6];
    size_t at = off + 40;
    for (int hops = 0; next != 6; hops++) {
      if (hops >= 8 || (next != 0 && next != 43 && next != 60) || left < 8) return false;
      size_t len = (f[at + 1] + 1u) * 8u;
      if (len > left) return false;
      next = f[at];
      at += len;
      left -= len;
    }
    out.family = 6;
    out.tcp = at;
    out.tcpLen = left;
    return true;
  }
  return false;
}

uint32_t OnesSum(std::span<const uint8_t> f, const Located& l) {
  const size_t alen = l.family == 4 ? 4 : 16;
  const uint8_t* src = &f[l.ip + (l.family == 4 ? 12 : 8)];
  const uint8_t* dst = src + alen;
  uint64_t sum = 0;
  for (size_t i = 0; i < alen; i += 2) sum += Get16(src + i) + Get16(dst + i);
  sum += 6 + (l.tcpLen >> 16) + (l.tcpLen & 0xffff);
  for (size_t i = 0; i < l.tcpLen; i++) sum += (i % 2 == 0) ? f[l.tcp + i] << 8 : f[l.tcp + i];
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint32_t>(sum);
}

bool ChecksumOk(std::span<const uint8_t> f, const Located& l) {
  return l.tcp + l.tcpLen <= f.size() && OnesSum(f, l) == 0xffff;
}

// Writes the right TCP checksum when the framing leads to a whole TCP header; false otherwise.
bool FillChecksum(std::vector<uint8_t>& f, LinkType link) {
  Located l;
  if (!Locate(f, link, l) || l.tcpLen < 20 || l.tcp + l.tcpLen > f.size()) return false;
  PutBe16(&f[l.tcp + 16], 0);
  PutBe16(&f[l.tcp + 16], static_cast<uint16_t>(~OnesSum(f, l) & 0xffff));
  if (!ChecksumOk(f, l)) Fail("FillChecksum left a wrong checksum", __LINE__);
  return true;
}

// Gives a mutated frame back a right IP length (to what is there) and TCP checksum, when the
// framing still leads to a TCP header, so that deeper mutations get past those checks.
void Repair(std::vector<uint8_t>& f, LinkType link, Rng& rng) {
  if (rng.OneIn(2) && f.size() >= 14 + 40) {
    // Fix the IP length field to the frame's length first (when it is plausibly IP).
    size_t off = link == LinkType::kEthernet ? 14 : 0;
    if (link == LinkType::kEthernet) {
      uint16_t et = Get16(&f[12]);
      for (int tags = 0; tags < 2 && (et == 0x8100 || et == 0x88a8) && f.size() >= off + 4; tags++) {
        et = Get16(&f[off + 2]);
        off += 4;
      }
    }
    if (f.size() > off + 40) {
      if ((f[off] >> 4) == 4 && f.size() - off <= 0xffff) PutBe16(&f[off + 2], static_cast<uint16_t>(f.size() - off));
      if ((f[off] >> 4) == 6 && f.size() - off - 40 <= 0xffff) PutBe16(&f[off + 4], static_cast<uint16_t>(f.size() - off - 40));
    }
  }
  FillChecksum(f, link);
}

// ---- mutations ----------------------------------------------------------------------------

const uint8_t kInteresting8[] = {0, 1, 2, 3, 4, 5, 6, 8, 10, 14, 15, 16, 0x1f, 0x20, 0x3f, 0x40, 0x45, 0x4f, 0x50, 0x5f, 0x60, 0x7f, 0x80, 0xf0, 0xfe, 0xff};
const uint16_t kInteresting16[] = {0, 1, 2, 19, 20, 39, 40, 60, 0x3fff, 0x4000, 0x2000, 0x1fff, 0x7fff, 0x8000, 0xfffe, 0xffff,
                                   0x0800, 0x86dd, 0x8100, 0x88a8};

void Mutate(std::vector<uint8_t>& b, const std::vector<Seed>& seeds, Rng& rng) {
  const uint32_t edits = 1 + rng.Below(rng.OneIn(4) ? 16 : 4);
  for (uint32_t e = 0; e < edits; e++) {
    if (b.empty()) {
      b.push_back(static_cast<uint8_t>(rng.Next()));
      continue;
    }
    // Headers are where the decisions are: most edits land in the first 100 bytes.
    const size_t span = rng.OneIn(4) ? b.size() : std::min<size_t>(b.size(), 100);
    const size_t at = rng.Below(static_cast<uint32_t>(span));
    switch (rng.Below(10)) {
      case 0: b[at] ^= static_cast<uint8_t>(1u << rng.Below(8)); break;
      case 1: b[at] = static_cast<uint8_t>(rng.Next()); break;
      case 2: b[at] = kInteresting8[rng.Below(sizeof kInteresting8)]; break;
      case 3:
        if (at + 1 < b.size()) PutBe16(&b[at], kInteresting16[rng.Below(sizeof kInteresting16 / 2)]);
        break;
      case 4: b.resize(rng.Below(static_cast<uint32_t>(b.size() + 1))); break;  // truncate
      case 5: {  // extend with noise
        size_t n = 1 + rng.Below(64);
        for (size_t i = 0; i < n; i++) b.push_back(static_cast<uint8_t>(rng.Next()));
        break;
      }
      case 6: {  // insert or delete a few bytes in the middle
        size_t n = 1 + rng.Below(8);
        if (rng.OneIn(2)) {
          b.insert(b.begin() + static_cast<long>(at), n, static_cast<uint8_t>(rng.Next()));
        } else {
          b.erase(b.begin() + static_cast<long>(at), b.begin() + static_cast<long>(std::min(b.size(), at + n)));
        }
        break;
      }
      case 7: {  // splice: overwrite with a piece of another seed, same or shifted offset
        const auto& o = seeds[rng.Below(static_cast<uint32_t>(seeds.size()))].bytes;
        size_t from = rng.OneIn(2) ? at : rng.Below(static_cast<uint32_t>(o.size()));
        size_t n = 1 + rng.Below(48);
        for (size_t j = 0; j < n && at + j < b.size() && from + j < o.size(); j++) b[at + j] = o[from + j];
        break;
      }
      case 8: {  // splice: another seed's tail
        const auto& o = seeds[rng.Below(static_cast<uint32_t>(seeds.size()))].bytes;
        size_t from = rng.Below(static_cast<uint32_t>(o.size()));
        b.resize(at);
        b.insert(b.end(), o.begin() + static_cast<long>(from), o.end());
        break;
      }
      default:  // a small number where lengths and offsets live
        b[at] = static_cast<uint8_t>(rng.Below(16) << (rng.OneIn(2) ? 4 : 0));
        break;
    }
  }
}

// New ports, addresses and sequence numbers (then a fixed checksum) so the table fills up.
void VaryFlow(std::vector<uint8_t>& f, LinkType link, Rng& rng) {
  Located l;
  if (!Locate(f, link, l) || l.tcpLen < 20 || l.tcp + 20 > f.size()) return;
  PutBe16(&f[l.tcp + rng.Below(2) * 2], static_cast<uint16_t>(1 + rng.Below(rng.OneIn(2) ? 64 : 65535)));
  if (rng.OneIn(2)) f[l.ip + (l.family == 4 ? 15 : 23)] = static_cast<uint8_t>(rng.Below(8));
  if (rng.OneIn(2)) PutBe32(&f[l.tcp + 4 + rng.Below(2) * 4], static_cast<uint32_t>(rng.Next()));
  static const uint8_t kFlags[] = {kSyn, kSyn | kAck, kAck, kAck | kPsh, kFin | kAck, kRst, kRst | kAck, kFin, 0, kPsh, kUrg};
  if (rng.OneIn(2)) f[l.tcp + 13] = kFlags[rng.Below(sizeof kFlags)];
}

// ---- invariants ---------------------------------------------------------------------------

bool SameSegment(const TcpSegment& x, const TcpSegment& y) {
  return x.family == y.family && !std::memcmp(x.src, y.src, 16) && !std::memcmp(x.dst, y.dst, 16) && x.sport == y.sport &&
         x.dport == y.dport && x.seq == y.seq && x.ack == y.ack && x.flags == y.flags && x.window == y.window &&
         x.urgentPointer == y.urgentPointer && x.mss == y.mss && x.wscale == y.wscale && x.sackPermitted == y.sackPermitted &&
         x.hasTimestamp == y.hasTimestamp && x.tsval == y.tsval && x.tsecr == y.tsecr && x.payloadLength == y.payloadLength &&
         x.payload == y.payload && x.payloadCaptured == y.payloadCaptured;
}

void CheckSegment(const TcpSegment& s, std::span<const uint8_t> f, size_t wire, LinkType link, bool verified) {
  CHECK(s.family == 4 || s.family == 6);
  CHECK(s.sport != 0 && s.dport != 0);
  CHECK(s.wscale >= -1 && s.wscale <= 14);
  CHECK(s.payloadCaptured <= s.payloadLength);
  CHECK(s.payloadLength <= wire);
  CHECK(s.payload != nullptr && s.payload >= f.data() && s.payload + s.payloadCaptured <= f.data() + f.size());
  if (s.family == 4) {
    for (int i = 4; i < 16; i++) CHECK(s.src[i] == 0 && s.dst[i] == 0);
  }
  if (verified || s.payloadCaptured == s.payloadLength) {
    // The whole segment was captured: the independent locator finds it, the same way.
    Located l;
    CHECK(Locate(f, link, l));
    CHECK(l.family == s.family);
    CHECK(s.payload + s.payloadLength == f.data() + l.tcp + l.tcpLen);
    CHECK(s.payloadLength + 20 <= l.tcpLen);
    if (verified) {
      CHECK(s.payloadCaptured == s.payloadLength);
      CHECK(ChecksumOk(f, l));
    }
  }
}

uint64_t TableDigest(const FlowTable& t) {
  uint64_t h = 1469598103934665603ull ^ t.size();
  auto mix = [&h](const void* p, size_t n) {
    const uint8_t* b = static_cast<const uint8_t*>(p);
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
  };
  uint64_t sum = 0;  // order-independent over flows
  t.ForEach([&](const Flow& f) {
    h = 1469598103934665603ull;
    for (const FlowSideState* s : {&f.a, &f.b}) {
      mix(s->ep.addr, 16);
      mix(&s->ep.port, 2);
      mix(&s->nextSeq, 4);
      mix(&s->ack, 4);
      mix(&s->rawWindow, 4);
      mix(&s->packets, 8);
      mix(&s->bytes, 8);
      mix(&s->lastSeenMs, 8);
    }
    mix(&f.state, 1);
    sum += h;
  });
  const auto& st = t.stats();
  return sum ^ (st.segments * 31 + st.refusedFull * 17 + st.ignoredStray * 7 + t.size());
}

void CheckTable(const FlowTable& t, size_t maxFlows, double nowMs, double idleMs, double lingerMs, bool afterExpire) {
  CHECK(t.size() <= maxFlows);
  size_t n = 0;
  t.ForEach([&](const Flow& f) {
    n++;
    CHECK(f.family == 4 || f.family == 6);
    CHECK(static_cast<unsigned>(f.state) <= static_cast<unsigned>(FlowState::kReset));
    CHECK(f.a.packets + f.b.packets >= 1);
    CHECK(f.firstSeenMs <= f.lastSeenMs);
    if (f.state == FlowState::kSynSent) CHECK(f.handshakeSeen);
    for (const FlowSideState* s : {&f.a, &f.b}) {
      CHECK(s->wscaleOption >= -1 && s->wscaleOption <= 14);
      int shift = f.WindowShift(*s);
      CHECK(shift >= -1 && shift <= 14);
      CHECK(s->rawWindow <= 0xffff);
      CHECK(f.ScaledWindow(*s) <= (uint32_t{0xffff} << 14));
      CHECK(s->lastSeenMs <= f.lastSeenMs);
      if (f.family == 4) {
        for (int i = 4; i < 16; i++) CHECK(s->ep.addr[i] == 0);
      }
    }
    if (afterExpire) {
      bool finished = f.state == FlowState::kClosed || f.state == FlowState::kReset;
      CHECK(nowMs - f.lastSeenMs <= (finished ? lingerMs : idleMs));
    }
    // Every flow is found by its endpoints, either way round; its generation is one the
    // table has handed out.
    CHECK(t.Find(f.family, f.a.ep, f.b.ep) == &f);
    CHECK(t.Find(f.family, f.b.ep, f.a.ep) == &f);
    CHECK(f.updated >= 1 && f.updated <= t.generation());
  });
  CHECK(n == t.size());
}

}  // namespace

int main(int argc, char** argv) {
  const uint64_t iterations = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 10'000'000;
  const double seconds = argc > 2 ? std::strtod(argv[2], nullptr) : 90;
  const uint64_t seed = argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 0x7a6b;
  Rng rng(seed);

  const std::vector<uint8_t> mss = {2, 4, 5, 0xb4}, ws = {3, 3, 7}, sackOk = {4, 2}, ts = {8, 10, 0, 0, 0, 1, 0, 0, 0, 2},
                             sack = {1, 1, 5, 10, 0, 0, 0, 1, 0, 0, 0, 9};
  auto cat = [](std::initializer_list<std::vector<uint8_t>> parts) {
    std::vector<uint8_t> v;
    for (const auto& p : parts) v.insert(v.end(), p.begin(), p.end());
    return v;
  };
  std::vector<Seed> seeds;
  {
    Spec s;
    s.flags = kSyn;
    s.tcpOptions = cat({mss, sackOk, ts, {1}, ws});
    seeds.push_back(Build(s));
    s.flags = kSyn | kAck;
    s.sport = 7000;
    s.dport = 40000;
    s.tcpOptions = cat({mss, {1, 1}, sackOk, {1}, {3, 3, 15}});
    seeds.push_back(Build(s));
  }
  {
    Spec s;
    s.flags = kAck | kPsh;
    s.tcpOptions = cat({{1, 1}, ts});
    s.ipOptions = {7, 7, 4, 0, 0, 0, 0};
    s.payload = 101;
    seeds.push_back(Build(s));
  }
  {
    Spec s;
    s.v6 = true;
    s.vlans = 1;
    s.ipv6ExtTypes = {0, 60};
    s.tcpOptions = sack;
    s.payload = 30;
    seeds.push_back(Build(s));
    s.vlans = 2;
    s.ipv6ExtTypes = {0, 43, 60};
    s.flags = kFin | kAck;
    s.payload = 0;
    s.tcpOptions = ws;
    seeds.push_back(Build(s));
  }
  {
    Spec s;
    s.v6 = true;
    s.flags = kSyn;
    s.tcpOptions = cat({mss, ws, sackOk, ts});
    seeds.push_back(Build(s));
  }
  {
    Spec s;
    s.flags = kRst;
    s.padding = 6;
    seeds.push_back(Build(s));
    s.flags = kRst | kAck;
    s.padding = 0;
    s.raw = true;
    seeds.push_back(Build(s));
  }
  {
    Spec s;
    s.raw = true;
    s.v6 = true;
    s.flags = kAck | kUrg;
    s.payload = 7;
    s.tcpOptions = {30, 6, 1, 2, 3, 4, 0};  // unknown option, then EOL
    seeds.push_back(Build(s));
  }
  {
    Spec s;  // no flags at all: a stray that may not create a flow
    s.flags = 0;
    s.payload = 1;
    seeds.push_back(Build(s));
  }
  // The seeds themselves must parse, verified, before mutating them means anything.
  for (Seed& sd : seeds) {
    g_frame = sd.bytes;
    CHECK(FillChecksum(sd.bytes, sd.link));
    TcpSegment seg;
    g_frame = sd.bytes;
    CHECK(ParseTcpFrame(std::span<const uint8_t>(sd.bytes), sd.bytes.size(), sd.link, seg, true));
  }

  constexpr size_t kMaxFlows = 4096;  // small, so the full-table path runs too
  constexpr double kIdleMs = 40000, kLingerMs = 5000;
  FlowTable table(kMaxFlows);
  uint64_t accepted = 0, acceptedVerified = 0, acceptedMutatedVerified = 0, rejected = 0, created = 0, expired = 0;
  const auto start = std::chrono::steady_clock::now();
  std::vector<uint8_t>& buf = g_frame;
  uint64_t i = 0;
  double nowMs = 0;
  for (; i < iterations; i++) {
    g_iteration = i;
    nowMs += 1;  // one simulated millisecond per frame
    if ((i & 0x3ff) == 0) {
      double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (elapsed > seconds) break;
    }
    if ((i & 0xfff) == 0) {
      expired += table.Expire(nowMs, kIdleMs, kLingerMs);
      CheckTable(table, kMaxFlows, nowMs, kIdleMs, kLingerMs, true);
    }

    const uint32_t kind = rng.Below(16);
    LinkType link;
    bool mutated = true;
    if (kind == 0) {  // noise
      buf.resize(rng.Below(200));
      for (auto& b : buf) b = static_cast<uint8_t>(rng.Next());
      link = rng.OneIn(2) ? LinkType::kRawIp : LinkType::kEthernet;
    } else {
      const Seed& sd = seeds[rng.Below(static_cast<uint32_t>(seeds.size()))];
      buf = sd.bytes;
      link = sd.link;
      if (kind <= 4) {  // a valid frame of a new flow
        VaryFlow(buf, link, rng);
        Repair(buf, link, rng);
        mutated = false;
      } else {
        Mutate(buf, seeds, rng);
        if (rng.OneIn(3)) VaryFlow(buf, link, rng);
        if (rng.OneIn(2)) Repair(buf, link, rng);
      }
      if (rng.OneIn(16)) link = link == LinkType::kRawIp ? LinkType::kEthernet : LinkType::kRawIp;
    }
    // The wire may have been longer than what was captured (a snap length).
    const size_t wire = buf.size() + (rng.OneIn(4) ? rng.Below(100) : 0);
    // Parse an exactly sized heap copy: a vector's spare capacity would hide a read past the
    // end from ASan.
    std::unique_ptr<uint8_t[]> exact(new uint8_t[buf.size() + (buf.empty() ? 1 : 0)]);
    if (!buf.empty()) std::memcpy(exact.get(), buf.data(), buf.size());
    const std::span<const uint8_t> frame(exact.get(), buf.size());

    TcpSegment plain, again, verified, other;
    const bool okPlain = ParseTcpFrame(frame, wire, link, plain, false);
    const bool okAgain = ParseTcpFrame(frame, wire, link, again, false);
    const bool okVerified = ParseTcpFrame(frame, wire, link, verified, true);
    CHECK(okPlain == okAgain);
    if (okPlain) CHECK(SameSegment(plain, again));
    if (okVerified) {
      CHECK(okPlain);  // verification only removes acceptances
      CHECK(SameSegment(plain, verified));
      CheckSegment(verified, frame, wire, link, true);
      acceptedVerified++;
      if (mutated) acceptedMutatedVerified++;
    }
    // The other link type, both ways: only safety and self-consistency.
    const LinkType otherLink = link == LinkType::kRawIp ? LinkType::kEthernet : LinkType::kRawIp;
    if (ParseTcpFrame(frame, wire, otherLink, other, false)) CheckSegment(other, frame, wire, otherLink, false);
    if (ParseTcpFrame(frame, wire, otherLink, other, true)) CheckSegment(other, frame, wire, otherLink, true);
    // A wire length below the captured length is nonsense and refused.
    if (!buf.empty()) CHECK(!ParseTcpFrame(frame, buf.size() - 1, link, other, false));

    // What the capture does: Update only what the parser accepted (no verification).
    const size_t before = table.size();
    const uint64_t segsBefore = table.stats().segments, fullBefore = table.stats().refusedFull;
    if (!okPlain) {
      rejected++;
      const bool deep = (rejected & 0x3ff) == 0;
      const uint64_t digest = deep ? TableDigest(table) : 0;
      // (the capture's code path: nothing to feed)
      CHECK(table.size() == before && table.stats().segments == segsBefore);
      if (deep) CHECK(TableDigest(table) == digest);
      continue;
    }
    accepted++;
    CheckSegment(plain, frame, wire, link, false);
    table.Update(plain, nowMs);
    CHECK(table.stats().segments == segsBefore + 1);
    CHECK(table.size() <= kMaxFlows);
    CHECK(table.size() <= before + 1);
    const bool mayCreate = !(plain.flags & kRst) && (plain.flags & (kSyn | kAck));
    if (table.size() > before) {
      CHECK(mayCreate);
      CHECK(before < kMaxFlows);
      created++;
    }
    if (table.stats().refusedFull > fullBefore) CHECK(before == kMaxFlows && mayCreate);
    if ((i & 0xffff) == 0) CheckTable(table, kMaxFlows, nowMs, kIdleMs, kLingerMs, false);
  }
  expired += table.Expire(nowMs, kIdleMs, kLingerMs);
  CheckTable(table, kMaxFlows, nowMs, kIdleMs, kLingerMs, true);
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const auto& st = table.stats();
  std::printf(
      "%" PRIu64 " iterations in %.1f s (seed %" PRIu64 "): %" PRIu64 " accepted (%" PRIu64 " verified, %" PRIu64
      " of them mutated), %" PRIu64 " rejected; flows: %" PRIu64 " created, %" PRIu64 " expired, %zu at the end (max %zu), %" PRIu64
      " refused (full), %" PRIu64 " stray\n",
      i, elapsed, seed, accepted, acceptedVerified, acceptedMutatedVerified, rejected, created, expired, table.size(), kMaxFlows,
      st.refusedFull, st.ignoredStray);
  return 0;
}
