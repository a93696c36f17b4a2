// See packet_ring.h.
#include "packet_ring.h"

#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <sys/socket.h>

#include <cerrno>

namespace takeover {

SyscallResult BindAllProtocols(int fd, int ifindex) {
  sockaddr_ll sll{};
  sll.sll_family = AF_PACKET;
  sll.sll_protocol = htons(ETH_P_ALL);
  sll.sll_ifindex = ifindex;
  if (bind(fd, reinterpret_cast<sockaddr*>(&sll), sizeof sll) < 0) return {"bind", errno};
  return {};
}

SyscallResult OpenRing(int fd, const RingShape& shape, int ifindex, RingMapping& out) {
  int version = TPACKET_V3;
  if (setsockopt(fd, SOL_PACKET, PACKET_VERSION, &version, sizeof version) < 0) return {"setsockopt", errno};
  tpacket_req3 req{};
  req.tp_block_size = shape.blockSize;
  req.tp_block_nr = shape.blockCount;
  req.tp_frame_size = 2048;  // only a unit for tp_frame_nr under V3; frames are variable
  req.tp_frame_nr = shape.blockSize / req.tp_frame_size * shape.blockCount;
  // A partly filled block is handed over after this many ms. Every such block is one of
  // blockCount: a reader busy for blockCount x timeout loses packets however empty they are.
  req.tp_retire_blk_tov = shape.blockTimeoutMs;
  if (setsockopt(fd, SOL_PACKET, PACKET_RX_RING, &req, sizeof req) < 0) return {"setsockopt", errno};
  const size_t size = static_cast<size_t>(shape.blockSize) * shape.blockCount;
  void* ring = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (ring == MAP_FAILED) return {"mmap", errno};
  RingMapping mapping(static_cast<uint8_t*>(ring), size);
  if (SyscallResult r = BindAllProtocols(fd, ifindex); r.err) return r;
  out = std::move(mapping);
  return {};
}

}  // namespace takeover
