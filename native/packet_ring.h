// The TPACKET_V3 receive ring of a capture socket: set up, mapped and unmapped. Setting a ring up
// (PACKET_RX_RING) and closing a socket that has one both wait for an RCU grace period in the
// kernel (synchronize_net(): 7-44 ms measured here, more on a loaded host), so the capture runs them on a
// libuv worker, never on the event loop that sends heartbeats.
#pragma once
#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <utility>

namespace takeover {

// RAII owner of the ring's mapping.
class RingMapping {
 public:
  RingMapping() = default;
  RingMapping(uint8_t* data, size_t size) : data_(data), size_(size) {}
  RingMapping(const RingMapping&) = delete;
  RingMapping& operator=(const RingMapping&) = delete;
  RingMapping(RingMapping&& o) noexcept : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  RingMapping& operator=(RingMapping&& o) noexcept {
    if (this != &o) {
      reset();
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  ~RingMapping() { reset(); }

  uint8_t* data() const { return data_; }
  explicit operator bool() const { return data_ != nullptr; }
  void reset() {
    if (data_) munmap(data_, size_);
    data_ = nullptr;
    size_ = 0;
  }

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

struct RingShape {
  uint32_t blockSize = 0;   // bytes, a multiple of the page size
  uint32_t blockCount = 0;
  uint32_t blockTimeoutMs = 0;  // a partly filled block is handed over after this long
};

// What a failed step returns: the syscall and its errno (0: success).
struct SyscallResult {
  const char* syscall = nullptr;
  int err = 0;
};

// On a socket made with protocol 0 (receiving nothing yet): TPACKET_V3, the ring, its mapping,
// then bind() to ETH_P_ALL on ifindex (0: every interface), so the first frame lands in the
// ring. Blocks for a grace period (PACKET_RX_RING): call it off the event loop. On failure
// nothing is left mapped.
SyscallResult OpenRing(int fd, const RingShape& shape, int ifindex, RingMapping& out);

// bind() of a packet socket to ETH_P_ALL on ifindex (0: every interface).
SyscallResult BindAllProtocols(int fd, int ifindex);

}  // namespace takeover
