// Fuzz driver for the packet parser and the flow table, built with ASan + UBSan (run.sh).
// clang/libFuzzer are not on these machines, so this is a deterministic seeded mutation loop:
// valid frames, mutated (bit flips, byte sets, truncation, splices) or replaced by noise, fed
// to ParseTcpFrame with both link types, with and without checksum verification; every
// accepted segment goes into a small FlowTable. Invariants abort on violation:
//   - an accepted segment is self-consistent (ports, payload within the frame);
//   - a lone RST, or a segment with neither SYN nor ACK, never creates a flow;
//   - the table never exceeds its bound (kept small so that path runs).
// Usage: parse_and_track [iterations] [seconds] [seed]
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "../inet_checksum.h"
#include "../packet_parse.h"
#include "../tcp_flows.h"

using namespace takeover;

namespace {

[[noreturn]] void Fail(const char* what, uint64_t iteration) {
  std::fprintf(stderr, "invariant violated at iteration %llu: %s\n", static_cast<unsigned long long>(iteration), what);
  std::abort();
}

std::vector<uint8_t> Frame(bool v6, uint8_t flags, std::vector<uint8_t> options, size_t payload, bool vlan) {
  while (options.size() % 4) options.push_back(1);
  std::vector<uint8_t> f;
  const uint8_t mac[12] = {2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1};
  f.insert(f.end(), mac, mac + 12);
  if (vlan) f.insert(f.end(), {0x81, 0x00, 0x00, 0x07});
  f.insert(f.end(), {static_cast<uint8_t>(v6 ? 0x86 : 0x08), static_cast<uint8_t>(v6 ? 0xdd : 0x00)});
  const size_t tcpLen = 20 + options.size() + payload;
  const size_t ipAt = f.size();
  uint8_t src[16] = {0xfd, 0x7a, 0x6b, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  uint8_t dst[16] = {0xfd, 0x7a, 0x6b, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2};
  if (v6) {
    f.resize(ipAt + 40);
    f[ipAt] = 0x60;
    PutBe16(&f[ipAt + 4], static_cast<uint16_t>(tcpLen));
    f[ipAt + 6] = 6;
    f[ipAt + 7] = 64;
    std::memcpy(&f[ipAt + 8], src, 16);
    std::memcpy(&f[ipAt + 24], dst, 16);
  } else {
    f.resize(ipAt + 20);
    f[ipAt] = 0x45;
    PutBe16(&f[ipAt + 2], static_cast<uint16_t>(20 + tcpLen));
    PutBe16(&f[ipAt + 6], 0x4000);
    f[ipAt + 8] = 64;
    f[ipAt + 9] = 6;
    const uint8_t s4[4] = {198, 18, 0, 1}, d4[4] = {198, 18, 0, 2};
    std::memcpy(&f[ipAt + 12], s4, 4);
    std::memcpy(&f[ipAt + 16], d4, 4);
    std::memcpy(src, s4, 4);
    std::memcpy(dst, d4, 4);
  }
  const size_t t = f.size();
  f.resize(t + tcpLen, 0x61);
  PutBe16(&f[t], 40000);
  PutBe16(&f[t + 2], 7000);
  PutBe32(&f[t + 4], 1000);
  PutBe32(&f[t + 8], 2000);
  f[t + 12] = static_cast<uint8_t>(((20 + options.size()) / 4) << 4);
  f[t + 13] = flags;
  PutBe16(&f[t + 14], 65535);
  if (!options.empty()) std::memcpy(&f[t + 20], options.data(), options.size());
  InetChecksum sum;
  sum.Add(src, v6 ? 16 : 4);
  sum.Add(dst, v6 ? 16 : 4);
  sum.Add32(static_cast<uint32_t>(tcpLen));
  sum.Add16(6);
  sum.Add(&f[t], tcpLen);
  PutBe16(&f[t + 16], sum.Finish());
  return f;
}

}  // namespace

int main(int argc, char** argv) {
  const uint64_t iterations = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 5'000'000;
  const double seconds = argc > 2 ? std::strtod(argv[2], nullptr) : 60;
  const uint32_t seed = argc > 3 ? static_cast<uint32_t>(std::strtoul(argv[3], nullptr, 10)) : 0x7a6b;
  std::mt19937 rng(seed);
  auto rnd = [&](uint32_t n) { return static_cast<uint32_t>(rng() % n); };

  const std::vector<uint8_t> mss = {2, 4, 5, 0xb4}, ws = {3, 3, 7}, sack = {4, 2}, ts = {8, 10, 0, 0, 0, 1, 0, 0, 0, 2};
  std::vector<std::vector<uint8_t>> seeds = {
      Frame(false, kSyn, {2, 4, 5, 0xb4, 1, 3, 3, 7, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0}, 0, false),
      Frame(false, kSyn | kAck, mss, 0, false),
      Frame(false, kAck | kPsh, ts, 100, false),
      Frame(true, kAck, sack, 30, true),
      Frame(true, kFin | kAck, ws, 0, false),
      Frame(false, kRst, {}, 0, false),
  };
  constexpr size_t kMaxFlows = 256;  // small, so the full-table path runs too
  FlowTable table(kMaxFlows);
  const auto start = std::chrono::steady_clock::now();
  uint64_t accepted = 0, i = 0;
  std::vector<uint8_t> buf;
  for (; i < iterations; i++) {
    if ((i & 0xfff) == 0) {
      double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (elapsed > seconds) break;
      table.Expire(static_cast<double>(i), 2000, 500);
    }
    const uint32_t kind = rnd(10);
    if (kind == 0) {
      buf.resize(rnd(200));
      for (auto& b : buf) b = static_cast<uint8_t>(rng());
    } else {
      buf = seeds[rnd(seeds.size())];
      const uint32_t edits = 1 + rnd(6);
      for (uint32_t e = 0; e < edits && !buf.empty(); e++) {
        switch (rnd(5)) {
          case 0: buf[rnd(buf.size())] ^= static_cast<uint8_t>(1u << rnd(8)); break;
          case 1: buf[rnd(buf.size())] = static_cast<uint8_t>(rng()); break;
          case 2: buf.resize(rnd(buf.size() + 1)); break;
          case 3: {  // splice a piece of another seed
            const auto& other = seeds[rnd(seeds.size())];
            size_t at = rnd(buf.size()), from = rnd(other.size()), n = rnd(32);
            for (size_t j = 0; j < n && at + j < buf.size() && from + j < other.size(); j++) buf[at + j] = other[from + j];
            break;
          }
          default: {  // vary ports and sequence numbers so the table fills up
            if (buf.size() > 60) PutBe16(&buf[34 + rnd(2) * 2], static_cast<uint16_t>(1 + rnd(65535)));
            break;
          }
        }
      }
    }
    // The wire may have been longer than what was captured.
    const size_t wire = buf.size() + (rnd(4) == 0 ? rnd(64) : 0);
    const LinkType link = rnd(8) == 0 ? LinkType::kRawIp : LinkType::kEthernet;
    TcpSegment seg;
    if (!ParseTcpFrame(std::span<const uint8_t>(buf.data(), buf.size()), wire, link, seg, rnd(2) == 0)) continue;
    accepted++;
    if (seg.sport == 0 || seg.dport == 0) Fail("accepted a zero port", i);
    if (seg.family != 4 && seg.family != 6) Fail("bad family", i);
    if (seg.payloadCaptured > seg.payloadLength) Fail("captured more payload than the segment has", i);
    if (seg.payloadCaptured > 0 && (seg.payload < buf.data() || seg.payload + seg.payloadCaptured > buf.data() + buf.size()))
      Fail("payload outside the frame", i);
    const size_t before = table.size();
    table.Update(seg, static_cast<double>(i));
    const bool mayCreate = !(seg.flags & kRst) && (seg.flags & (kSyn | kAck));
    if (!mayCreate && table.size() > before) Fail("a stray segment created a flow", i);
    if (table.size() > kMaxFlows) Fail("table exceeded its bound", i);
  }
  double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%llu iterations in %.1f s, %llu accepted, %zu flows, %llu refused (full), %llu stray\n",
              static_cast<unsigned long long>(i), elapsed, static_cast<unsigned long long>(accepted), table.size(),
              static_cast<unsigned long long>(table.stats().refusedFull), static_cast<unsigned long long>(table.stats().ignoredStray));
  return 0;
}
