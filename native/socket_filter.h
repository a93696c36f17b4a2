// Attaching a classic BPF program (built in TypeScript: src/net/bpf-filter.ts) to a socket;
// shared by packet_capture.cc and address_probe.cc.
#pragma once
#include <linux/filter.h>
#include <napi.h>
#include <sys/socket.h>

#include <cerrno>

#include "errors.h"

namespace takeover {

// Attaches a classic BPF program given as struct sock_filter[] bytes (replacing any earlier one).
inline void AttachFilter(Napi::Env env, int fd, Napi::Value filter) {
  if (!filter.IsBuffer()) ThrowInvalidArg(env, "filter must be a Buffer of struct sock_filter");
  auto buf = filter.As<Napi::Buffer<uint8_t>>();
  if (buf.Length() == 0 || buf.Length() % sizeof(sock_filter) || buf.Length() / sizeof(sock_filter) > BPF_MAXINSNS)
    ThrowInvalidArg(env, "filter must hold 1 to 4096 instructions of 8 bytes");
  sock_fprog prog{static_cast<unsigned short>(buf.Length() / sizeof(sock_filter)), reinterpret_cast<sock_filter*>(buf.Data())};
  if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) < 0) ThrowErrno(env, "setsockopt", errno);
}

}  // namespace takeover
