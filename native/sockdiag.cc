// NETLINK_SOCK_DIAG for TCP: list the sockets of this network namespace (SOCK_DIAG_BY_FAMILY
// dump) and kill one (SOCK_DESTROY, needs CONFIG_INET_DIAG_DESTROY and CAP_NET_ADMIN).
//
// The synchronous calls (tcpSockets, destroySocket) suit the CLI's occasional listing: a dump
// costs time in proportion to the number of sockets (a few ms for thousands). The agent's event
// loop also sends heartbeats, so it uses the asynchronous forms: tcpSocketsAsync dumps on a
// libuv worker (only the states and local ports asked for come back to JS), and
// destroySocketsAsync resets a batch of sockets over one netlink socket on a worker.
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
constexpr uint32_t kSeq = 1;  // a dump uses a fresh socket; a destroy batch numbers its requests 1..n

template <typename Body>
struct NlRequest {
  nlmsghdr header;
  Body body;
};

// The netlink exchanges below never touch JS, so they run on the event loop or on a libuv
// worker alike: errors come back as a positive errno (0 = success).

int OpenDiagSocket(UniqueFd& out) {
  out.reset(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
  return out ? 0 : errno;
}

int SendToKernel(int fd, const void* msg, size_t len) {
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;  // nl_pid 0 is the kernel
  for (;;) {
    ssize_t n = sendto(fd, msg, len, 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel);
    if (n == static_cast<ssize_t>(len)) return 0;
    if (n >= 0) return EMSGSIZE;  // netlink never sends part of a message
    if (errno != EINTR) return errno;
  }
}

// Where a failure happened, for the JS error's `syscall`.
struct DiagStatus {
  int err = 0;
  const char* syscall = "";
  bool ok() const { return err == 0; }
};

// Reads the replies to request `seq` until NLMSG_DONE (end of a dump) or NLMSG_ERROR (which
// is also how an ACK arrives, with error 0). Every other message goes to on_message.
// `kernel_error` gets the errno the kernel reported (0 for an ACK or a complete dump).
template <typename OnMessage>
DiagStatus ReadReplies(int fd, uint32_t seq, std::vector<char>& buffer, int& kernel_error, OnMessage&& on_message) {
  for (;;) {
    iovec iov{buffer.data(), buffer.size()};
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    ssize_t n = recvmsg(fd, &mh, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return {errno, "recvmsg"};
    }
    // A cut datagram would silently lose sockets from the list; refuse rather than guess.
    if (mh.msg_flags & MSG_TRUNC) return {EMSGSIZE, "recvmsg"};
    if (n == 0) return {EPIPE, "recvmsg"};

    int len = static_cast<int>(n);
    for (auto* nh = reinterpret_cast<nlmsghdr*>(buffer.data()); NLMSG_OK(nh, len); nh = NLMSG_NEXT(nh, len)) {
      if (nh->nlmsg_seq != seq) continue;
      if (nh->nlmsg_type == NLMSG_ERROR) {
        nlmsgerr err;
        if (nh->nlmsg_len < NLMSG_LENGTH(sizeof err)) return {EPROTO, "recvmsg"};
        std::memcpy(&err, NLMSG_DATA(nh), sizeof err);
        kernel_error = -err.error;
        return {};
      }
      if (nh->nlmsg_type == NLMSG_DONE) {
        // A dump that failed half way reports its error in NLMSG_DONE's payload.
        int status = 0;
        if (nh->nlmsg_len >= NLMSG_LENGTH(sizeof status)) std::memcpy(&status, NLMSG_DATA(nh), sizeof status);
        kernel_error = -status;
        return {};
      }
      on_message(nh);
    }
  }
}

int FamilyToAf(int family) { return family == 4 ? AF_INET : AF_INET6; }

// Which sockets a dump returns: kernel-side by state (a bitmask of 1 << TCP state), and here
// by local port before anything is copied towards JS.
struct DumpFilter {
  uint32_t states = ~0u;     // every state, listeners and TIME_WAIT included
  std::vector<uint16_t> localPorts;  // empty: any
};

DiagStatus Dump(int family, const DumpFilter& filter, std::vector<inet_diag_msg>& out) {
  UniqueFd fd;
  if (int e = OpenDiagSocket(fd)) return {e, "socket"};
  NlRequest<inet_diag_req_v2> req{};
  req.header.nlmsg_len = sizeof req;
  req.header.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  req.header.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  req.header.nlmsg_seq = kSeq;
  req.body.sdiag_family = static_cast<uint8_t>(FamilyToAf(family));
  req.body.sdiag_protocol = IPPROTO_TCP;
  req.body.idiag_states = filter.states;
  if (int e = SendToKernel(fd.get(), &req, sizeof req)) return {e, "sendto"};
  std::vector<char> buffer(kRecvBufferSize);  // operator new alignment suits nlmsghdr
  int kernel_error = 0;
  DiagStatus st = ReadReplies(fd.get(), kSeq, buffer, kernel_error, [&](const nlmsghdr* nh) {
    if (nh->nlmsg_type != SOCK_DIAG_BY_FAMILY) return;
    inet_diag_msg m;
    if (nh->nlmsg_len < NLMSG_LENGTH(sizeof m)) return;  // attributes after it are not needed
    std::memcpy(&m, NLMSG_DATA(nh), sizeof m);
    if (m.idiag_family != AF_INET && m.idiag_family != AF_INET6) return;
    if (!filter.localPorts.empty()) {
      uint16_t port = ntohs(m.id.idiag_sport);
      bool wanted = false;
      for (uint16_t p : filter.localPorts) wanted = wanted || p == port;
      if (!wanted) return;
    }
    out.push_back(m);
  });
  if (!st.ok()) return st;
  if (kernel_error != 0) return {kernel_error, "sock_diag"};
  return {};
}

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
  o.Set("rqueue", static_cast<double>(m.idiag_rqueue));
  o.Set("wqueue", static_cast<double>(m.idiag_wqueue));
  // The kernel splits the 64-bit cookie low word first (sock_diag_save_cookie); a JS number
  // cannot hold 64 bits, so it travels as decimal text.
  uint64_t cookie = m.id.idiag_cookie[0] | (static_cast<uint64_t>(m.id.idiag_cookie[1]) << 32);
  o.Set("cookie", std::to_string(cookie));
  return o;
}

Napi::Array SocketArray(Napi::Env env, const std::vector<inet_diag_msg>& sockets) {
  Napi::Array out = Napi::Array::New(env, sockets.size());
  for (uint32_t i = 0; i < sockets.size(); i++) out.Set(i, SocketObject(env, sockets[i]));
  return out;
}

int FamilyArg(const Napi::CallbackInfo& info) {
  int family = static_cast<int>(IntArg(info, 0, "family", 4, 6));
  if (family != 4 && family != 6) ThrowInvalidArg(info.Env(), "family must be 4 or 6");
  return family;
}

// tcpSockets(family: 4 | 6): DiagSocket[] — every TCP socket of that family, in any state.
Napi::Value TcpSockets(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int family = FamilyArg(info);
  std::vector<inet_diag_msg> sockets;
  DiagStatus st = Dump(family, DumpFilter{}, sockets);
  if (!st.ok()) ThrowErrno(env, st.syscall, st.err);
  return SocketArray(env, sockets);
}

constexpr size_t kSocketFields = 11;

class DumpWorker : public Napi::AsyncWorker {
 public:
  DumpWorker(Napi::Env env, int family, DumpFilter filter)
      : Napi::AsyncWorker(env, "takeover:tcpSockets"), deferred_(Napi::Promise::Deferred::New(env)), family_(family), filter_(std::move(filter)) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override { status_ = Dump(family_, filter_, sockets_); }

  // Flat, as the flow table travels: building thousands of objects property by property
  // through Node-API holds the event loop ~3 us a socket; src/net/sockdiag.ts builds them in JS.
  // numbers per socket: family, state, sport, dport, ifindex, inode, uid, cookie low, cookie high,
  // rqueue, wqueue.
  void OnOK() override {
    Napi::Env env = Env();
    if (!status_.ok()) {
      deferred_.Reject(ErrnoError(env, status_.syscall, status_.err).Value());
      return;
    }
    const size_t n = sockets_.size();
    Napi::Float64Array nums = Napi::Float64Array::New(env, n * kSocketFields);
    Napi::Array addresses = Napi::Array::New(env, 2 * n);
    for (size_t i = 0; i < n; i++) {
      const inet_diag_msg& m = sockets_[i];
      double* o = nums.Data() + i * kSocketFields;
      o[0] = m.idiag_family == AF_INET ? 4 : 6;
      o[1] = m.idiag_state;
      o[2] = ntohs(m.id.idiag_sport);
      o[3] = ntohs(m.id.idiag_dport);
      o[4] = m.id.idiag_if;
      o[5] = static_cast<double>(m.idiag_inode);
      o[6] = static_cast<double>(m.idiag_uid);
      o[7] = m.id.idiag_cookie[0];
      o[8] = m.id.idiag_cookie[1];
      o[9] = m.idiag_rqueue;
      o[10] = m.idiag_wqueue;
      addresses.Set(static_cast<uint32_t>(2 * i), AddressText(m.idiag_family, m.id.idiag_src));
      addresses.Set(static_cast<uint32_t>(2 * i + 1), AddressText(m.idiag_family, m.id.idiag_dst));
    }
    Napi::Object out = Napi::Object::New(env);
    out.Set("count", static_cast<double>(n));
    out.Set("numbers", nums);
    out.Set("addresses", addresses);
    deferred_.Resolve(out);
  }

  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  int family_;
  DumpFilter filter_;
  std::vector<inet_diag_msg> sockets_;
  DiagStatus status_;
};

// tcpSocketsAsync(family, { states?: bitmask of 1 << state, localPorts?: number[] }) ->
// Promise<{ count, numbers, addresses }>: the dump on a libuv worker, flat (see OnOK).
Napi::Value TcpSocketsAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int family = FamilyArg(info);
  DumpFilter filter;
  if (info.Length() > 1 && !info[1].IsUndefined()) {
    if (!info[1].IsObject()) ThrowInvalidArg(env, "options must be an object");
    Napi::Object o = info[1].As<Napi::Object>();
    Napi::Value states = o.Get("states");
    if (!states.IsUndefined()) filter.states = static_cast<uint32_t>(IntValue(env, states, "options.states", 1, UINT32_MAX));
    Napi::Value ports = o.Get("localPorts");
    if (!ports.IsUndefined()) {
      if (!ports.IsArray()) ThrowInvalidArg(env, "options.localPorts must be an array of ports");
      Napi::Array a = ports.As<Napi::Array>();
      if (a.Length() == 0 || a.Length() > 1024) ThrowInvalidArg(env, "options.localPorts must hold 1 to 1024 ports");
      for (uint32_t i = 0; i < a.Length(); i++)
        filter.localPorts.push_back(static_cast<uint16_t>(IntValue(env, a.Get(i), "options.localPorts[]", 1, 65535)));
    }
  }
  auto* worker = new DumpWorker(env, family, std::move(filter));
  Napi::Promise p = worker->Promise();
  worker->Queue();
  return p;
}

void ParseAddress(Napi::Env env, Napi::Object sock, const char* key, int af, __be32 out[4]) {
  Napi::Value v = sock.Get(key);
  if (!v.IsString()) ThrowInvalidArg(env, std::string(key) + " must be an address string");
  std::string text = v.As<Napi::String>().Utf8Value();
  if (inet_pton(af, text.c_str(), out) != 1)
    ThrowInvalidArg(env, std::string(key) + " is not an IPv" + (af == AF_INET ? "4" : "6") + " address: " + text);
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

// The SOCK_DESTROY request naming exactly one socket (4-tuple, device, cookie), from a JS
// DiagSocketId. The cookie makes it exact: a socket that reused the same 4-tuple since the
// listing has a different cookie and is left alone (the kernel answers ENOENT).
NlRequest<inet_diag_req_v2> DestroyRequest(Napi::Env env, Napi::Value v) {
  if (!v.IsObject()) ThrowInvalidArg(env, "socket must be an object");
  Napi::Object sock = v.As<Napi::Object>();
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
  if (!ifindex.IsUndefined()) id.idiag_if = static_cast<uint32_t>(IntValue(env, ifindex, "ifindex", 0, UINT32_MAX));
  uint64_t cookie = ParseCookie(env, sock.Get("cookie"));
  id.idiag_cookie[0] = static_cast<uint32_t>(cookie);
  id.idiag_cookie[1] = static_cast<uint32_t>(cookie >> 32);
  return req;
}

// Sends each request over one socket and reads its ACK: errors[i] = the kernel's errno (0:
// reset). A transport failure (not the kernel's answer) ends the batch with that status.
DiagStatus DestroyAll(std::vector<NlRequest<inet_diag_req_v2>>& reqs, std::vector<int32_t>& errors) {
  UniqueFd fd;
  if (int e = OpenDiagSocket(fd)) return {e, "socket"};
  std::vector<char> buffer(kRecvBufferSize);
  errors.assign(reqs.size(), 0);
  for (size_t i = 0; i < reqs.size(); i++) {
    uint32_t seq = static_cast<uint32_t>(i + 1);
    reqs[i].header.nlmsg_seq = seq;
    if (int e = SendToKernel(fd.get(), &reqs[i], sizeof reqs[i])) return {e, "sendto"};
    int kernel_error = 0;
    DiagStatus st = ReadReplies(fd.get(), seq, buffer, kernel_error, [](const nlmsghdr*) {});
    if (!st.ok()) return st;
    errors[i] = kernel_error;
  }
  return {};
}

// destroySocket(sock): SOCK_DESTROY of the socket with exactly this 4-tuple and cookie. The
// kernel resets the connection (RST to the peer) and the local owner sees ECONNABORTED.
Napi::Value DestroySocket(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<NlRequest<inet_diag_req_v2>> reqs{DestroyRequest(env, info[0])};
  std::vector<int32_t> errors;
  DiagStatus st = DestroyAll(reqs, errors);
  if (!st.ok()) ThrowErrno(env, st.syscall, st.err);
  if (errors[0] != 0) ThrowErrno(env, "sock_destroy", errors[0]);
  return env.Undefined();
}

class DestroyWorker : public Napi::AsyncWorker {
 public:
  DestroyWorker(Napi::Env env, std::vector<NlRequest<inet_diag_req_v2>> reqs)
      : Napi::AsyncWorker(env, "takeover:destroySockets"), deferred_(Napi::Promise::Deferred::New(env)), reqs_(std::move(reqs)) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override { status_ = DestroyAll(reqs_, errors_); }

  void OnOK() override {
    Napi::Env env = Env();
    if (!status_.ok()) {
      deferred_.Reject(ErrnoError(env, status_.syscall, status_.err).Value());
      return;
    }
    Napi::Int32Array out = Napi::Int32Array::New(env, errors_.size());
    for (size_t i = 0; i < errors_.size(); i++) out[i] = errors_[i];
    deferred_.Resolve(out);
  }

  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  std::vector<NlRequest<inet_diag_req_v2>> reqs_;
  std::vector<int32_t> errors_;
  DiagStatus status_;
};

// destroySocketsAsync(sockets: DiagSocketId[]) -> Promise<Int32Array>: SOCK_DESTROY of each on
// a libuv worker, over one netlink socket; per socket 0 (reset) or the kernel's errno (ENOENT:
// gone already). Arguments are checked before anything is sent.
Napi::Value DestroySocketsAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsArray()) ThrowInvalidArg(env, "sockets must be an array");
  Napi::Array a = info[0].As<Napi::Array>();
  if (a.Length() > 65536) ThrowInvalidArg(env, "at most 65536 sockets per call");
  std::vector<NlRequest<inet_diag_req_v2>> reqs;
  reqs.reserve(a.Length());
  for (uint32_t i = 0; i < a.Length(); i++) reqs.push_back(DestroyRequest(env, a.Get(i)));
  auto* worker = new DestroyWorker(env, std::move(reqs));
  Napi::Promise p = worker->Promise();
  worker->Queue();
  return p;
}

}  // namespace

void InitSockDiag(Napi::Env env, Napi::Object exports) {
  exports.Set("tcpSockets", Napi::Function::New(env, TcpSockets, "tcpSockets"));
  exports.Set("destroySocket", Napi::Function::New(env, DestroySocket, "destroySocket"));
  exports.Set("tcpSocketsAsync", Napi::Function::New(env, TcpSocketsAsync, "tcpSocketsAsync"));
  exports.Set("destroySocketsAsync", Napi::Function::New(env, DestroySocketsAsync, "destroySocketsAsync"));
}

}  // namespace takeover
