// Plain operations on a socket fd that JS holds by number (typically one borrowed from
// another process with borrowFd), plus a TCP_REPAIR peek at a socket's sequence numbers.
#include <linux/tcp.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "arg_checks.h"
#include "errors.h"
#include "modules.h"
#include "repair_mode_exit.h"
#include "segment_object.h"

namespace takeover {
namespace {

// sendOnFd(fd, data, oob): bytes written. MSG_DONTWAIT because the fd may be a blocking
// socket of another process and the JS thread must never hang on a full send buffer
// (the caller sees EAGAIN instead); MSG_NOSIGNAL so a reset peer cannot SIGPIPE us.
Napi::Value SendOnFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  if (!info[1].IsTypedArray() ||
      info[1].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
    ThrowInvalidArg(env, "data must be a Uint8Array");
  auto data = info[1].As<Napi::Uint8Array>();
  if (!info[2].IsBoolean()) ThrowInvalidArg(env, "oob must be a boolean");
  int flags = MSG_DONTWAIT | MSG_NOSIGNAL | (info[2].As<Napi::Boolean>().Value() ? MSG_OOB : 0);

  for (;;) {
    ssize_t n = send(fd, data.Data(), data.ByteLength(), flags);
    if (n >= 0) return Napi::Number::New(env, static_cast<double>(n));
    if (errno != EINTR) ThrowErrno(env, "send", errno);
  }
}

// shutdownWrite(fd): FIN to the peer once queued data is sent. It acts on the socket, not the
// fd, so it also ends the write side for every other holder of the socket.
Napi::Value ShutdownWrite(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (shutdown(FdArg(info, 0), SHUT_WR) != 0) ThrowErrno(env, "shutdown", errno);
  return env.Undefined();
}

// shutdownRead(fd): reads return end-of-file from now on; nothing is sent (TCP acts on SHUT_WR
// only). For a restored socket whose peer had sent its FIN before the dump: RCV.NXT already
// counts it, and this is how its reader learns of it.
Napi::Value ShutdownRead(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (shutdown(FdArg(info, 0), SHUT_RD) != 0) ThrowErrno(env, "shutdown", errno);
  return env.Undefined();
}

// closeFd(fd). EINTR is not an error on Linux: the fd is released before close returns, and
// retrying could close an fd another thread has just been given.
Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (close(FdArg(info, 0)) != 0 && errno != EINTR) ThrowErrno(env, "close", errno);
  return env.Undefined();
}

// dupFd(fd): a new fd for the same open socket (close-on-exec), owned by the caller, who must
// closeFd it. For handing a socket to another process (the relay keeper takes it with
// pidfd_getfd) after the stream that watched the original has closed it.
Napi::Value DupFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = fcntl(FdArg(info, 0), F_DUPFD_CLOEXEC, 0);
  if (fd < 0) ThrowErrno(env, "fcntl", errno);
  return Napi::Number::New(env, fd);
}

// socketPeer(fd): { address, port } of a connected IPv4/IPv6 socket's peer (getpeername). The
// relay keeper checks that the fds it copied by number are the connection it was told of.
Napi::Value SocketPeer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (getpeername(FdArg(info, 0), reinterpret_cast<sockaddr*>(&ss), &len) != 0) ThrowErrno(env, "getpeername", errno);
  Napi::Object out = Napi::Object::New(env);
  if (ss.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    out.Set("address", AddressText(4, reinterpret_cast<const uint8_t*>(&a->sin_addr)));
    out.Set("port", Napi::Number::New(env, ntohs(a->sin_port)));
  } else if (ss.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    out.Set("address", AddressText(6, reinterpret_cast<const uint8_t*>(&a->sin6_addr)));
    out.Set("port", Napi::Number::New(env, ntohs(a->sin6_port)));
  } else {
    ThrowInvalidArg(env, "socketPeer needs an IPv4 or IPv6 socket");
  }
  return out;
}

void SetInt(Napi::Env env, int fd, int level, int name, int value) {
  if (setsockopt(fd, level, name, &value, sizeof value) != 0) ThrowErrno(env, "setsockopt", errno);
}

uint32_t GetQueueSeq(Napi::Env env, int fd) {
  uint32_t seq = 0;
  socklen_t len = sizeof seq;
  if (getsockopt(fd, IPPROTO_TCP, TCP_QUEUE_SEQ, &seq, &len) != 0)
    ThrowErrno(env, "getsockopt", errno);
  return seq;
}

// tcpRepairSeq(fd): { sendSeq: write_seq, recvSeq: rcv_nxt } of a connected TCP socket.
// While the send queue is selected, the kernel would mark queued segments as sent without
// transmitting them (they then go out on retransmit), so that window is kept to the single
// getsockopt that needs it.
Napi::Value TcpRepairSeq(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);

  int reuse = 0;
  socklen_t reuse_len = sizeof reuse;
  if (getsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &reuse, &reuse_len) != 0)
    ThrowErrno(env, "getsockopt", errno);
  SetInt(env, fd, IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_ON);
  RepairModeExit guard(fd, reuse);  // however the peek ends

  SetInt(env, fd, IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE);
  uint32_t recv_seq = GetQueueSeq(env, fd);
  SetInt(env, fd, IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE);
  uint32_t send_seq = GetQueueSeq(env, fd);
  SetInt(env, fd, IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_NO_QUEUE);

  Napi::Object out = Napi::Object::New(env);
  out.Set("sendSeq", Napi::Number::New(env, send_seq));
  out.Set("recvSeq", Napi::Number::New(env, recv_seq));
  return out;
}

// tcpRepairClose(fd): closes a connected TCP socket without a FIN or a RST: in repair mode the
// kernel drops it silently (for a connection whose numbers are not the peer's: any segment it
// sent would be wrong). When repair mode cannot be entered, throws and leaves the fd open.
Napi::Value TcpRepairClose(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  SetInt(env, fd, IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_ON);
  if (close(fd) != 0 && errno != EINTR) ThrowErrno(env, "close", errno);
  return env.Undefined();
}

}  // namespace

void InitSocketOps(Napi::Env env, Napi::Object exports) {
  exports.Set("sendOnFd", Napi::Function::New(env, SendOnFd, "sendOnFd"));
  exports.Set("shutdownWrite", Napi::Function::New(env, ShutdownWrite, "shutdownWrite"));
  exports.Set("shutdownRead", Napi::Function::New(env, ShutdownRead, "shutdownRead"));
  exports.Set("closeFd", Napi::Function::New(env, CloseFd, "closeFd"));
  exports.Set("dupFd", Napi::Function::New(env, DupFd, "dupFd"));
  exports.Set("socketPeer", Napi::Function::New(env, SocketPeer, "socketPeer"));
  exports.Set("tcpRepairSeq", Napi::Function::New(env, TcpRepairSeq, "tcpRepairSeq"));
  exports.Set("tcpRepairClose", Napi::Function::New(env, TcpRepairClose, "tcpRepairClose"));
}

}  // namespace takeover
