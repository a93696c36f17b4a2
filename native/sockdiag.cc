// NETLINK_SOCK_DIAG for TCP: list the sockets of this network namespace (SOCK_DIAG_BY_FAMILY
// dump) and kill one (SOCK_DESTROY, needs CONFIG_INET_DIAG_DESTROY and CAP_NET_ADMIN).
//
// Both run synchronously on the JS thread. A netlink round trip to the local kernel takes
// well under a millisecond: destroy is one message each way, and a dump costs time in
// proportion to the number of sockets (a few ms for thousands), which is acceptable for
// the occasional listing this tool does and keeps the API free of callbacks.
#include <arpa/inet.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "arg_checks.h"
#include "errors.h"
#include "modules.h"
#include "unique_fd.h"

namespace takeover {
namespace {

// The kernel sizes dump batches to the reader's buffer, starting from about one page
// (up to 32 KiB on big-page systems); 32 KiB therefore always holds a whole batch.
constexpr size_t kRecvBufferSize = 32 * 1024;
constexpr uint32_t kSeq = 1;  // each call uses a fresh socket, so one sequence number suffices

template <typename Body>
struct NlRequest {
  nlmsghdr header;
  Body body;
};

UniqueFd OpenDiagSocket(Napi::Env env) {
  UniqueFd fd(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
  if (!fd) ThrowErrno(env, "socket", errno);
  return fd;
}

void SendToKernel(Napi::Env env, int fd, const void* msg, size_t len) {
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;  // nl_pid 0 is the kernel
  for (;;) {
    ssize_t n = sendto(fd, msg, len, 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel);
    if (n == static_cast<ssize_t>(len)) return;
    if (n >= 0) ThrowErrno(env, "sendto", EMSGSIZE);  // netlink never sends part of a message
    if (errno != EINTR) ThrowErrno(env, "sendto", errno);
  }
}

// Reads the replies to request kSeq until NLMSG_DONE (end of a dump) or NLMSG_ERROR (which
// is also how an ACK arrives, with error 0). Every other message goes to on_message.
// Returns 0 or a positive errno reported by the kernel.
template <typename OnMessage>
int ReadReplies(Napi::Env env, int fd, OnMessage&& on_message) {
  std::vector<char> buffer(kRecvBufferSize);  // operator new alignment suits nlmsghdr
  for (;;) {
    iovec iov{buffer.data(), buffer.size()};
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    ssize_t n = recvmsg(fd, &mh, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      ThrowErrno(env, "recvmsg", errno);
    }
    // A cut datagram would silently lose sockets from the list; refuse rather than guess.
    if (mh.msg_flags & MSG_TRUNC) ThrowErrno(env, "recvmsg", EMSGSIZE);
    if (n == 0) ThrowErrno(env, "recvmsg", EPIPE);

    int len = static_cast<int>(n);
    for (auto* nh = reinterpret_cast<nlmsghdr*>(buffer.data()); NLMSG_OK(nh, len);
         nh = NLMSG_NEXT(nh, len)) {
      if (nh->nlmsg_seq != kSeq) continue;
      if (nh->nlmsg_type == NLMSG_ERROR) {
        nlmsgerr err;
        if (nh->nlmsg_len < NLMSG_LENGTH(sizeof err)) return EPROTO;
        std::memcpy(&err, NLMSG_DATA(nh), sizeof err);
        return -err.error;
      }
      if (nh->nlmsg_type == NLMSG_DONE) {
        // A dump that failed half way reports its error in NLMSG_DONE's payload.
        int status = 0;
        if (nh->nlmsg_len >= NLMSG_LENGTH(sizeof status))
          std::memcpy(&status, NLMSG_DATA(nh), sizeof status);
        return -status;
      }
      on_message(nh);
    }
  }
}

int FamilyToAf(int family) { return family == 4 ? AF_INET : AF_INET6; }

std::string AddressText(int af, const __be32 words[4]) {
  char text[INET6_ADDRSTRLEN];
  if (!inet_ntop(af, words, text, sizeof text)) return "";
  return text;
}

Napi::Object SocketObject(Napi::Env env, const inet_diag_msg& m) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("family", m.idiag_family == AF_INET ? 4 : 6);
  o.Set("state", m.idiag_state);
  o.Set("src", AddressText(m.idiag_family, m.id.idiag_src));
  o.Set("sport", ntohs(m.id.idiag_sport));
  o.Set("dst", AddressText(m.idiag_family, m.id.idiag_dst));
  o.Set("dport", ntohs(m.id.idiag_dport));
  o.Set("ifindex", m.id.idiag_if);
  o.Set("inode", static_cast<double>(m.idiag_inode));
  o.Set("uid", static_cast<double>(m.idiag_uid));
  // The kernel splits the 64-bit cookie low word first (sock_diag_save_cookie); a JS number
  // cannot hold 64 bits, so it travels as decimal text.
  uint64_t cookie = m.id.idiag_cookie[0] | (static_cast<uint64_t>(m.id.idiag_cookie[1]) << 32);
  o.Set("cookie", std::to_string(cookie));
  return o;
}

// tcpSockets(family: 4 | 6): DiagSocket[] — every TCP socket of that family, in any state.
Napi::Value TcpSockets(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int family = static_cast<int>(IntArg(info, 0, "family", 4, 6));
  if (family != 4 && family != 6) ThrowInvalidArg(env, "family must be 4 or 6");

  UniqueFd fd = OpenDiagSocket(env);
  NlRequest<inet_diag_req_v2> req{};
  req.header.nlmsg_len = sizeof req;
  req.header.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  req.header.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  req.header.nlmsg_seq = kSeq;
  req.body.sdiag_family = static_cast<uint8_t>(FamilyToAf(family));
  req.body.sdiag_protocol = IPPROTO_TCP;
  req.body.idiag_states = ~0u;  // every state, listeners and TIME_WAIT included
  SendToKernel(env, fd.get(), &req, sizeof req);

  Napi::Array out = Napi::Array::New(env);
  uint32_t count = 0;
  int err = ReadReplies(env, fd.get(), [&](const nlmsghdr* nh) {
    if (nh->nlmsg_type != SOCK_DIAG_BY_FAMILY) return;
    inet_diag_msg m;
    if (nh->nlmsg_len < NLMSG_LENGTH(sizeof m)) return;  // attributes after it are not needed
    std::memcpy(&m, NLMSG_DATA(nh), sizeof m);
    if (m.idiag_family != AF_INET && m.idiag_family != AF_INET6) return;
    out.Set(count++, SocketObject(env, m));
  });
  if (err != 0) ThrowErrno(env, "sock_diag", err);
  return out;
}

void ParseAddress(Napi::Env env, Napi::Object sock, const char* key, int af, __be32 out[4]) {
  Napi::Value v = sock.Get(key);
  if (!v.IsString()) ThrowInvalidArg(env, std::string(key) + " must be an address string");
  std::string text = v.As<Napi::String>().Utf8Value();
  if (inet_pton(af, text.c_str(), out) != 1)
    ThrowInvalidArg(env, std::string(key) + " is not an IPv" + (af == AF_INET ? "4" : "6") +
                             " address: " + text);
}

uint64_t ParseCookie(Napi::Env env, Napi::Value v) {
  if (!v.IsString()) ThrowInvalidArg(env, "cookie must be a decimal string");
  std::string text = v.As<Napi::String>().Utf8Value();
  uint64_t cookie = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), cookie, 10);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size())
    ThrowInvalidArg(env, "cookie must be a 64-bit decimal string: " + text);
  return cookie;
}

// destroySocket(sock): SOCK_DESTROY of the socket with exactly this 4-tuple and cookie. The
// kernel resets the connection (RST to the peer) and the local owner sees ECONNABORTED.
Napi::Value DestroySocket(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject()) ThrowInvalidArg(env, "socket must be an object");
  Napi::Object sock = info[0].As<Napi::Object>();
  int family = static_cast<int>(IntValue(env, sock.Get("family"), "family", 4, 6));
  if (family != 4 && family != 6) ThrowInvalidArg(env, "family must be 4 or 6");
  int af = FamilyToAf(family);

  NlRequest<inet_diag_req_v2> req{};
  req.header.nlmsg_len = sizeof req;
  req.header.nlmsg_type = SOCK_DESTROY;
  req.header.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
  req.header.nlmsg_seq = kSeq;
  req.body.sdiag_family = static_cast<uint8_t>(af);
  req.body.sdiag_protocol = IPPROTO_TCP;
  req.body.idiag_states = ~0u;
  inet_diag_sockid& id = req.body.id;
  ParseAddress(env, sock, "src", af, id.idiag_src);
  ParseAddress(env, sock, "dst", af, id.idiag_dst);
  id.idiag_sport = htons(static_cast<uint16_t>(IntValue(env, sock.Get("sport"), "sport", 0, 65535)));
  id.idiag_dport = htons(static_cast<uint16_t>(IntValue(env, sock.Get("dport"), "dport", 0, 65535)));
  // The lookup matches sockets bound to a device (e.g. IPv6 link-local) only with their index.
  Napi::Value ifindex = sock.Get("ifindex");
  if (!ifindex.IsUndefined())
    id.idiag_if = static_cast<uint32_t>(IntValue(env, ifindex, "ifindex", 0, UINT32_MAX));
  // The cookie makes the request exact: a socket that reused the same 4-tuple since the
  // listing has a different cookie and is left alone (the kernel answers ENOENT).
  uint64_t cookie = ParseCookie(env, sock.Get("cookie"));
  id.idiag_cookie[0] = static_cast<uint32_t>(cookie);
  id.idiag_cookie[1] = static_cast<uint32_t>(cookie >> 32);

  UniqueFd fd = OpenDiagSocket(env);
  SendToKernel(env, fd.get(), &req, sizeof req);
  int err = ReadReplies(env, fd.get(), [](const nlmsghdr*) {});
  if (err != 0) ThrowErrno(env, "sock_destroy", err);
  return env.Undefined();
}

}  // namespace

void InitSockDiag(Napi::Env env, Napi::Object exports) {
  exports.Set("tcpSockets", Napi::Function::New(env, TcpSockets, "tcpSockets"));
  exports.Set("destroySocket", Napi::Function::New(env, DestroySocket, "destroySocket"));
}

}  // namespace takeover
