// The Internet checksum (RFC 1071), shared by the TCP forge and the neighbour announcer.
// Header-only and free of Napi so fuzz and unit drivers can use it without the addon.
#pragma once
#include <cstddef>
#include <cstdint>

namespace takeover {

// Running one's-complement sum over 16-bit big-endian words. Chunks may be added one after
// another (pseudo-header, then header, then payload) as long as every chunk but the last has
// an even length, which holds for all the headers we sum.
class InetChecksum {
 public:
  void Add(const uint8_t* p, size_t n) {
    for (; n >= 2; p += 2, n -= 2) sum_ += static_cast<uint32_t>(p[0] << 8 | p[1]);
    if (n == 1) sum_ += static_cast<uint32_t>(p[0] << 8);  // odd tail is padded with zero
  }
  void Add16(uint16_t v) { sum_ += v; }
  void Add32(uint32_t v) { sum_ += (v >> 16) + (v & 0xffff); }

  // The value to store in the checksum field, host order (caller writes it big-endian).
  uint16_t Finish() const {
    uint64_t s = sum_;
    while (s >> 16) s = (s & 0xffff) + (s >> 16);
    return static_cast<uint16_t>(~s & 0xffff);
  }

 private:
  uint64_t sum_ = 0;  // 64 bits: no overflow before folding for any packet we can build
};

inline void PutBe16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}

inline void PutBe32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}

}  // namespace takeover
