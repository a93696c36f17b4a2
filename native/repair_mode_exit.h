// RAII exit from TCP_REPAIR mode, shared by the repair peek (socket_ops.cc) and the dump
// (tcp_repair.cc): however the caller's work ends, the socket leaves its selected repair queue
// and repair mode (unless `keep()` was called: a dump that hands the socket over frozen).
// Entering repair mode forced sk_reuse and leaving it sets "no reuse", so the socket's own
// SO_REUSEADDR is put back. Errors are ignored: the caller's own error matters more, and there
// is nothing better to do.
#pragma once
#include <linux/tcp.h>
#include <netinet/in.h>
#include <sys/socket.h>

namespace takeover {

class RepairModeExit {
 public:
  RepairModeExit(int fd, int reuse) : fd_(fd), reuse_(reuse) {}
  RepairModeExit(const RepairModeExit&) = delete;
  RepairModeExit& operator=(const RepairModeExit&) = delete;
  // The socket stays in repair mode (its queue selection is still cleared).
  void keep() { keep_ = true; }
  ~RepairModeExit() {
    int no_queue = TCP_NO_QUEUE;
    setsockopt(fd_, IPPROTO_TCP, TCP_REPAIR_QUEUE, &no_queue, sizeof no_queue);
    if (keep_) return;
    // OFF_NO_WP: the peer must not see a window probe from a mere look (Linux 4.16+); older
    // kernels refuse it with EINVAL and get the plain OFF, which sends one.
    int off = TCP_REPAIR_OFF_NO_WP;
    if (setsockopt(fd_, IPPROTO_TCP, TCP_REPAIR, &off, sizeof off) != 0) {
      off = TCP_REPAIR_OFF;
      setsockopt(fd_, IPPROTO_TCP, TCP_REPAIR, &off, sizeof off);
    }
    setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &reuse_, sizeof reuse_);
  }

 private:
  int fd_;
  int reuse_;
  bool keep_ = false;
};

}  // namespace takeover
