// TCP_REPAIR dump and restore of one established TCP connection (Linux >= 4.16 for
// TCP_REPAIR_WINDOW and TCP_REPAIR_OFF_NO_WP). Only syscalls and bytes here: what a state means,
// whether it is sane, and what to do with it is decided in TypeScript (src/net/tcp-repair*.ts),
// which validates every state before it reaches restore.
//
// Order of operations: the kernel's TCP_REPAIR documentation (Documentation/networking, the
// tcp_repair* handlers in net/ipv4/tcp.c) and CRIU's libsoccr (soccr/soccr.c) as the reference
// sequence; written from them, not copied:
//   dump:    TCP_INFO (state, options, wscale) -> TCP_REPAIR on -> SIOCOUTQ / SIOCOUTQNSD / SIOCINQ
//            -> TCP_MAXSEG (mss_clamp in repair mode) -> TCP_TIMESTAMP -> TCP_REPAIR_WINDOW
//            -> per queue: TCP_REPAIR_QUEUE + TCP_QUEUE_SEQ + recv(MSG_PEEK) -> TCP_NO_QUEUE
//            -> repair off (no window probe) unless the caller keeps the socket frozen.
//   restore: socket -> TCP_REPAIR on -> (IP_TRANSPARENT) -> buffers -> bind -> TCP_QUEUE_SEQ per queue
//            -> connect (no SYN) -> TCP_REPAIR_OPTIONS -> TCP_TIMESTAMP -> receive queue refill
//            -> TCP_MAXSEG before connect (segment size) -> sent-but-unacked refill (repair
//            mode: marked sent) -> TCP_REPAIR_WINDOW
//            -> repair off (window probe) -> unsent bytes sent as normal data.
#include <linux/sockios.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "address_arg.h"
#include "arg_checks.h"
#include "errors.h"
#include "modules.h"
#include "repair_mode_exit.h"
#include "unique_fd.h"

#ifndef SIOCOUTQNSD
#define SIOCOUTQNSD 0x894B
#endif
#ifndef TCPI_OPT_USEC_TS
#define TCPI_OPT_USEC_TS 64
#endif

namespace takeover {
namespace {

// TCP option kinds (RFC 9293, RFC 7323, RFC 2018) as TCP_REPAIR_OPTIONS takes them; netinet/tcp.h
// has them too but clashes with linux/tcp.h.
constexpr uint32_t kOptMaxSeg = 2;
constexpr uint32_t kOptWindow = 3;
constexpr uint32_t kOptSackPerm = 4;
constexpr uint32_t kOptTimestamp = 8;

// Bounds a state's queues; the TS parser applies the same bound.
// TCP_MAXSEG refuses less (TCP_MIN_MSS in include/net/tcp.h).
constexpr uint32_t kMinUserMss = 88;
constexpr uint32_t kMaxUserMss = 32767;

constexpr size_t kMaxQueue = 64u * 1024 * 1024;

const char* StateName(int s) {
  static const char* names[] = {"?",        "ESTABLISHED", "SYN_SENT",  "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2",
                                "TIME_WAIT", "CLOSE",      "CLOSE_WAIT", "LAST_ACK", "LISTEN",   "CLOSING"};
  return s >= 0 && s < 12 ? names[s] : "?";
}

// An error that carries its errno and the syscall that failed; becomes a Node-style error on the
// JS thread (dump throws it; restore is also run on workers, where no Napi call is allowed).
struct SysError {
  int err = 0;
  const char* syscall = "";
  std::string detail;
};

[[noreturn]] void Fail(const char* syscall, int err, std::string detail = {}) {
  throw SysError{err, syscall, std::move(detail)};
}

Napi::Error ToJs(Napi::Env env, const SysError& e) {
  Napi::Error js = ErrnoError(env, e.syscall, e.err);
  if (!e.detail.empty()) {
    Napi::Object o = js.Value();
    o.Set("message", o.Get("message").As<Napi::String>().Utf8Value() + " (" + e.detail + ")");
  }
  return js;
}

// setsockopt of an int; the option's name goes into the error message (many options share one
// syscall name).
#define SET_INT(fd, level, name, value) SetInt(fd, level, name, value, #name)
void SetInt(int fd, int level, int name, int value, const char* option) {
  if (setsockopt(fd, level, name, &value, sizeof value) != 0) Fail("setsockopt", errno, option);
}

int GetInt(int fd, int level, int name) {
  int v = 0;
  socklen_t len = sizeof v;
  if (getsockopt(fd, level, name, &v, &len) != 0) Fail("getsockopt", errno);
  return v;
}

int IoctlInt(int fd, unsigned long req) {
  int v = 0;
  if (ioctl(fd, req, &v) != 0) Fail("ioctl", errno);
  return v;
}

// One end of the connection, as a sockaddr.
struct Endpoint {
  sockaddr_storage ss{};
  socklen_t len = 0;
  int family() const { return ss.ss_family; }
};

Endpoint FromSockaddr(const sockaddr_storage& ss, socklen_t len) {
  Endpoint e;
  e.ss = ss;
  e.len = len;
  return e;
}

std::string AddressText(const Endpoint& e) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (e.family() == AF_INET)
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&e.ss)->sin_addr, buf, sizeof buf);
  else
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&e.ss)->sin6_addr, buf, sizeof buf);
  return buf;
}

int PortOf(const Endpoint& e) {
  return ntohs(e.family() == AF_INET ? reinterpret_cast<const sockaddr_in*>(&e.ss)->sin_port
                                     : reinterpret_cast<const sockaddr_in6*>(&e.ss)->sin6_port);
}

Endpoint MakeEndpoint(const IpAddress& a, int port, uint32_t scope_id) {
  Endpoint e;
  if (a.family == AF_INET) {
    auto* sin = reinterpret_cast<sockaddr_in*>(&e.ss);
    sin->sin_family = AF_INET;
    sin->sin_port = htons(static_cast<uint16_t>(port));
    std::memcpy(&sin->sin_addr, a.bytes, 4);
    e.len = sizeof(sockaddr_in);
  } else {
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&e.ss);
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(static_cast<uint16_t>(port));
    std::memcpy(&sin6->sin6_addr, a.bytes, 16);
    sin6->sin6_scope_id = scope_id;
    e.len = sizeof(sockaddr_in6);
  }
  return e;
}

// ---- dump ------------------------------------------------------------------------------------

struct Dumped {
  Endpoint local, remote;
  uint32_t send_seq = 0;  // snd_una: seq of send_queue[0]
  std::vector<uint8_t> send_queue;
  uint32_t unsent = 0;    // trailing bytes of send_queue never transmitted
  uint32_t recv_seq = 0;  // copied_seq: seq of recv_queue[0]
  std::vector<uint8_t> recv_queue;
  uint32_t mss = 0;
  bool sack = false, wscale = false, timestamps = false;
  uint32_t snd_wscale = 0, rcv_wscale = 0;
  uint32_t timestamp = 0;
  tcp_repair_window window{};
  int sndbuf = 0, rcvbuf = 0;
};

// Reads one queue in repair mode: its end sequence number and, peeked, its len bytes. One byte
// more is asked for, so a queue that grew since SIOC*Q was read is noticed instead of cut.
uint32_t PeekQueue(int fd, int queue, size_t len, std::vector<uint8_t>& out) {
  SET_INT(fd, IPPROTO_TCP, TCP_REPAIR_QUEUE, queue);
  uint32_t seq = 0;
  socklen_t sl = sizeof seq;
  if (getsockopt(fd, IPPROTO_TCP, TCP_QUEUE_SEQ, &seq, &sl) != 0) Fail("getsockopt", errno);
  out.assign(len + 1, 0);
  if (len > 0) {
    ssize_t n;
    do n = recv(fd, out.data(), len + 1, MSG_PEEK | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n < 0) Fail("recv", errno);
    if (static_cast<size_t>(n) != len)
      Fail("recv", EAGAIN,
           std::string(queue == TCP_RECV_QUEUE ? "receive" : "send") + " queue changed during the dump: " +
               std::to_string(n) + " bytes peeked, " + std::to_string(len) + " expected; lock the connection's traffic first");
  }
  out.resize(len);
  return seq;
}

Dumped DumpFd(int fd, bool keep_repair) {
  Dumped d;
  tcp_info ti{};
  socklen_t tl = sizeof ti;
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &tl) != 0) Fail("getsockopt", errno);
  if (ti.tcpi_state != 1 /* TCP_ESTABLISHED */)
    Fail("getsockopt", ti.tcpi_state == 10 ? EINVAL : ENOTCONN,
         std::string("TCP state ") + StateName(ti.tcpi_state) + ": only an ESTABLISHED connection can be dumped");
  if (ti.tcpi_options & TCPI_OPT_USEC_TS)
    Fail("getsockopt", EOPNOTSUPP, "microsecond TCP timestamps cannot be restored through TCP_REPAIR_OPTIONS");

  sockaddr_storage ss{};
  socklen_t sl = sizeof ss;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &sl) != 0) Fail("getsockname", errno);
  d.local = FromSockaddr(ss, sl);
  sl = sizeof ss;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &sl) != 0) Fail("getpeername", errno);
  d.remote = FromSockaddr(ss, sl);

  int reuse = GetInt(fd, SOL_SOCKET, SO_REUSEADDR);
  SET_INT(fd, IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_ON);
  RepairModeExit exit_guard(fd, reuse);  // the dump's failure, or a caller that does not keep it frozen

  int outq = IoctlInt(fd, SIOCOUTQ);      // write_seq - snd_una
  int notsent = IoctlInt(fd, SIOCOUTQNSD);  // write_seq - snd_nxt
  int inq = IoctlInt(fd, SIOCINQ);        // rcv_nxt - copied_seq
  if (outq < 0 || inq < 0 || notsent < 0 || notsent > outq || static_cast<size_t>(outq) > kMaxQueue ||
      static_cast<size_t>(inq) > kMaxQueue)
    Fail("ioctl", EOVERFLOW, "queue sizes out of range");
  d.unsent = static_cast<uint32_t>(notsent);

  d.mss = static_cast<uint32_t>(GetInt(fd, IPPROTO_TCP, TCP_MAXSEG));  // mss_clamp in repair mode
  d.sack = ti.tcpi_options & TCPI_OPT_SACK;
  d.wscale = ti.tcpi_options & TCPI_OPT_WSCALE;
  d.timestamps = ti.tcpi_options & TCPI_OPT_TIMESTAMPS;
  if (d.wscale) {
    d.snd_wscale = ti.tcpi_snd_wscale;
    d.rcv_wscale = ti.tcpi_rcv_wscale;
  }
  if (d.timestamps) d.timestamp = static_cast<uint32_t>(GetInt(fd, IPPROTO_TCP, TCP_TIMESTAMP));
  socklen_t wl = sizeof d.window;
  if (getsockopt(fd, IPPROTO_TCP, TCP_REPAIR_WINDOW, &d.window, &wl) != 0) Fail("getsockopt", errno);
  d.sndbuf = GetInt(fd, SOL_SOCKET, SO_SNDBUF);
  d.rcvbuf = GetInt(fd, SOL_SOCKET, SO_RCVBUF);

  uint32_t rcv_nxt = PeekQueue(fd, TCP_RECV_QUEUE, static_cast<size_t>(inq), d.recv_queue);
  uint32_t write_seq = PeekQueue(fd, TCP_SEND_QUEUE, static_cast<size_t>(outq), d.send_queue);
  SET_INT(fd, IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_NO_QUEUE);
  d.recv_seq = rcv_nxt - static_cast<uint32_t>(inq);
  d.send_seq = write_seq - static_cast<uint32_t>(outq);
  if (keep_repair) exit_guard.keep();
  return d;
}

Napi::Object EndpointJs(Napi::Env env, const Endpoint& e) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("address", AddressText(e));
  o.Set("port", PortOf(e));
  if (e.family() == AF_INET6)
    o.Set("scopeId", Napi::Number::New(env, reinterpret_cast<const sockaddr_in6*>(&e.ss)->sin6_scope_id));
  return o;
}

// tcpRepairDump(fd, keepRepair): the connection's state (see TcpRepairNativeState in
// src/native.ts). keepRepair true leaves the socket in repair mode: it sends nothing more, and
// closing it sends neither FIN nor RST (the source side of a migration).
Napi::Value TcpRepairDump(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  if (!info[1].IsBoolean()) ThrowInvalidArg(env, "keepRepair must be a boolean");
  Dumped d;
  try {
    d = DumpFd(fd, info[1].As<Napi::Boolean>().Value());
  } catch (const SysError& e) {
    throw ToJs(env, e);
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("family", d.local.family() == AF_INET ? 4 : 6);
  o.Set("local", EndpointJs(env, d.local));
  o.Set("remote", EndpointJs(env, d.remote));
  o.Set("sendSeq", Napi::Number::New(env, d.send_seq));
  o.Set("sendQueue", Napi::Buffer<uint8_t>::Copy(env, d.send_queue.data(), d.send_queue.size()));
  o.Set("sendUnsent", Napi::Number::New(env, d.unsent));
  o.Set("recvSeq", Napi::Number::New(env, d.recv_seq));
  o.Set("recvQueue", Napi::Buffer<uint8_t>::Copy(env, d.recv_queue.data(), d.recv_queue.size()));
  o.Set("mss", Napi::Number::New(env, d.mss));
  o.Set("sack", d.sack);
  o.Set("timestamps", d.timestamps);
  o.Set("wscale", d.wscale);
  o.Set("sndWscale", Napi::Number::New(env, d.snd_wscale));
  o.Set("rcvWscale", Napi::Number::New(env, d.rcv_wscale));
  o.Set("timestamp", Napi::Number::New(env, d.timestamp));
  o.Set("sndWl1", Napi::Number::New(env, d.window.snd_wl1));
  o.Set("sndWnd", Napi::Number::New(env, d.window.snd_wnd));
  o.Set("maxWindow", Napi::Number::New(env, d.window.max_window));
  o.Set("rcvWnd", Napi::Number::New(env, d.window.rcv_wnd));
  o.Set("rcvWup", Napi::Number::New(env, d.window.rcv_wup));
  o.Set("sndbuf", d.sndbuf);
  o.Set("rcvbuf", d.rcvbuf);
  return o;
}

// ---- restore ---------------------------------------------------------------------------------

// What a restore needs: a dumped connection, and whether to bind with IP_TRANSPARENT (its address
// not local yet).
struct RestoreSpec : Dumped {
  bool transparent = false;
};

struct RestoreResult {
  int fd = -1;
  uint32_t pending = 0;  // trailing send-queue bytes the kernel did not take (the caller writes them)
  double duration_us = 0;
  SysError error;
};

double NowUs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) * 1e6 + static_cast<double>(ts.tv_nsec) / 1e3;
}

// Writes bytes into the selected repair queue. For the receive queue the kernel allocates one
// linear skb per call and refuses (ENOMEM) what the slab cannot give: halve the chunk and go on.
void RefillRepairQueue(int fd, int queue, const uint8_t* data, size_t len) {
  if (len == 0) return;
  SET_INT(fd, IPPROTO_TCP, TCP_REPAIR_QUEUE, queue);
  size_t chunk = len;
  size_t off = 0;
  while (off < len) {
    size_t n = std::min(chunk, len - off);
    ssize_t w = send(fd, data + off, n, MSG_NOSIGNAL);
    if (w > 0) {
      off += static_cast<size_t>(w);
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    if (chunk > 1024 && (w == 0 || errno == ENOMEM || errno == EAGAIN)) {
      chunk /= 2;
      continue;
    }
    Fail("send", w < 0 ? errno : EIO,
         std::string(queue == TCP_RECV_QUEUE ? "receive" : "send") + " queue refill: " + std::to_string(off) + " of " +
             std::to_string(len) + " bytes taken");
  }
}

void EnsureBuffer(int fd, int name, int force_name, int wanted) {
  if (wanted <= 0) return;
  int have = GetInt(fd, SOL_SOCKET, name);
  // getsockopt reports the doubled value the kernel keeps; setsockopt doubles what it is given.
  if (have < wanted) SetInt(fd, SOL_SOCKET, force_name, wanted / 2, force_name == SO_SNDBUFFORCE ? "SO_SNDBUFFORCE" : "SO_RCVBUFFORCE");
}

// The buffer a queue of `queued` bytes is restored into (0: leave the default): the source's, or
// twice the bytes, whichever is larger (as getsockopt reports it: the kernel's doubled value).
int BufferFor(int source, size_t queued) {
  if (queued == 0) return 0;
  return static_cast<int>(std::min<size_t>(INT32_MAX, std::max<size_t>(static_cast<size_t>(source), 2 * queued)));
}

RestoreResult RestoreOne(const RestoreSpec& s) {
  RestoreResult r;
  double start = NowUs();
  try {
    UniqueFd fd(socket(s.local.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP));
    if (!fd) Fail("socket", errno);
    int f = fd.get();
    SET_INT(f, IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_ON);
    // Not SO_REUSEADDR from here on: it would clear the reuse repair mode forces, and a second
    // restored socket on the same address and port would fail with EADDRINUSE.
    // An address not (yet) on this host: IP_FREEBIND would let bind take it, but connect's route
    // lookup still refuses a non-local source (ENETUNREACH); IP_TRANSPARENT allows both (the
    // route lookup gets FLOWI_FLAG_ANYSRC). Segments reach the socket once the address is added.
    if (s.transparent) {
      if (s.local.family() == AF_INET)
        SET_INT(f, IPPROTO_IP, IP_TRANSPARENT, 1);
      else
        SET_INT(f, IPPROTO_IPV6, IPV6_TRANSPARENT, 1);
    }
    // The queues must fit: the source's buffers may have grown by autotuning, and the refill's
    // segments are charged with their overhead (truesize), which the source's own segments
    // need not have matched (a refill took 130320 of 130696 bytes into the source's SO_SNDBUF):
    // at least twice the bytes queued.
    EnsureBuffer(f, SO_SNDBUF, SO_SNDBUFFORCE, BufferFor(s.sndbuf, s.send_queue.size()));
    EnsureBuffer(f, SO_RCVBUF, SO_RCVBUFFORCE, BufferFor(s.rcvbuf, s.recv_queue.size()));
    if (bind(f, reinterpret_cast<const sockaddr*>(&s.local.ss), s.local.len) != 0) Fail("bind", errno);
    // Queue sequence numbers before connect (EPERM after): each queue starts empty at its start.
    SET_INT(f, IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE);
    SET_INT(f, IPPROTO_TCP, TCP_QUEUE_SEQ, static_cast<int>(s.recv_seq));
    SET_INT(f, IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE);
    SET_INT(f, IPPROTO_TCP, TCP_QUEUE_SEQ, static_cast<int>(s.send_seq));
    SET_INT(f, IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_NO_QUEUE);
    // The peer's MSS as our user MSS: connect then sizes segments (mss_cache) by it; the
    // TCP_REPAIR_OPTIONS MSS below only sets the clamp and would leave them at 536 bytes
    // (524 with timestamps) until a path MTU change. TCP_MAXSEG takes at most 32767
    // (MAX_TCP_WINDOW): exact for every Ethernet MTU, half of loopback's 65495.
    if (s.mss >= kMinUserMss) SET_INT(f, IPPROTO_TCP, TCP_MAXSEG, static_cast<int>(std::min(s.mss, kMaxUserMss)));
    // In repair mode connect sends no SYN: the socket is ESTABLISHED at once.
    if (connect(f, reinterpret_cast<const sockaddr*>(&s.remote.ss), s.remote.len) != 0) Fail("connect", errno);
    // Options after connect (EPERM before).
    tcp_repair_opt opts[4];
    unsigned n = 0;
    if (s.sack) opts[n++] = {kOptSackPerm, 0};
    if (s.wscale) opts[n++] = {kOptWindow, s.snd_wscale | (s.rcv_wscale << 16)};
    if (s.timestamps) opts[n++] = {kOptTimestamp, 0};
    opts[n++] = {kOptMaxSeg, s.mss};
    if (setsockopt(f, IPPROTO_TCP, TCP_REPAIR_OPTIONS, opts, n * sizeof(tcp_repair_opt)) != 0)
      Fail("setsockopt", errno, "TCP_REPAIR_OPTIONS");
    // Linux >= 6.7 reads the value's low bit as "microsecond timestamps" (tp->tcp_usec_ts): an
    // odd ms clock (a shadow's: the peer's last TSval + the ms since) would make the socket send
    // TSvals in µs, 1000 times too fast, and its peer's PAWS would drop them once they wrap past
    // 2^31 (about 36 min). Rounded up to even: a TSval 1 ms ahead is harmless, one behind is not.
    if (s.timestamps) SET_INT(f, IPPROTO_TCP, TCP_TIMESTAMP, static_cast<int>((s.timestamp + 1) & ~1u));
    // Receive queue: bytes the peer sent that the application had not read.
    RefillRepairQueue(f, TCP_RECV_QUEUE, s.recv_queue.data(), s.recv_queue.size());
    // Send queue, the part already on the wire: queued in repair mode it counts as sent, so
    // SND.NXT is where the peer may already be. (Sent again as new data after repair off
    // instead, an ACK from a peer that had more than the dump's SND.UNA would ack "unsent" data
    // and be dropped with its payload: a stall, seen here.) What the peer lacks goes again on
    // the retransmission timer; the window probe at repair off brings the peer's ACK.
    size_t sent_part = s.send_queue.size() - s.unsent;
    RefillRepairQueue(f, TCP_SEND_QUEUE, s.send_queue.data(), sent_part);
    SET_INT(f, IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_NO_QUEUE);
    if (setsockopt(f, IPPROTO_TCP, TCP_REPAIR_WINDOW, &s.window, sizeof s.window) != 0)
      Fail("setsockopt", errno, "TCP_REPAIR_WINDOW");
    // Repair off: the kernel sends a window probe, the peer's answer brings the live window.
    SET_INT(f, IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_OFF);
    // Repair off also clears the socket's reuse (SK_NO_REUSE): once closed, its TIME-WAIT would
    // keep a service from binding the port on any address of this host for a minute, even with
    // SO_REUSEADDR (both sides need it), as a trial saw PostgreSQL fail to. A server's own
    // accepted sockets inherit its listener's SO_REUSEADDR: so do these.
    SET_INT(f, SOL_SOCKET, SO_REUSEADDR, 1);
    size_t off = sent_part;
    while (off < s.send_queue.size()) {
      ssize_t w = send(f, s.send_queue.data() + off, s.send_queue.size() - off, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (w > 0) {
        off += static_cast<size_t>(w);
        continue;
      }
      if (w < 0 && errno == EINTR) continue;
      if (w < 0 && errno == EAGAIN) break;  // the rest is the caller's to write
      // The connection is live now: closing it here would reset the peer; report it as pending.
      break;
    }
    r.pending = static_cast<uint32_t>(s.send_queue.size() - off);
    r.fd = fd.release();
  } catch (const SysError& e) {
    r.error = e;
  }
  r.duration_us = NowUs() - start;
  return r;
}

uint32_t U32(Napi::Env env, Napi::Object o, const char* key) {
  return static_cast<uint32_t>(IntValue(env, o.Get(key), key, 0, UINT32_MAX));
}

bool Bool(Napi::Env env, Napi::Object o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsBoolean()) ThrowInvalidArg(env, std::string(key) + " must be a boolean");
  return v.As<Napi::Boolean>().Value();
}

std::vector<uint8_t> Bytes(Napi::Env env, Napi::Object o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
    ThrowInvalidArg(env, std::string(key) + " must be a Uint8Array");
  auto a = v.As<Napi::Uint8Array>();
  if (a.ByteLength() > kMaxQueue) ThrowInvalidArg(env, std::string(key) + " must be at most 64 MiB");
  return std::vector<uint8_t>(a.Data(), a.Data() + a.ByteLength());
}

Endpoint EndpointArg(Napi::Env env, Napi::Value v, const char* key) {
  if (!v.IsObject()) ThrowInvalidArg(env, std::string(key) + " must be an object");
  Napi::Object o = v.As<Napi::Object>();
  IpAddress a = AddressValue(env, o.Get("address"), std::string(key) + ".address");
  int port = static_cast<int>(IntValue(env, o.Get("port"), "port", 1, 65535));
  uint32_t scope = 0;
  if (o.Has("scopeId") && !o.Get("scopeId").IsUndefined())
    scope = static_cast<uint32_t>(IntValue(env, o.Get("scopeId"), "scopeId", 0, UINT32_MAX));
  return MakeEndpoint(a, port, scope);
}

// The native shape of a state (what tcpRepairDump returns, plus transparent).
// Checked here only as far as memory safety needs; meaning is checked by the TS parser.
RestoreSpec SpecArg(Napi::Env env, Napi::Value v) {
  if (!v.IsObject()) ThrowInvalidArg(env, "state must be an object");
  Napi::Object o = v.As<Napi::Object>();
  RestoreSpec s;
  s.local = EndpointArg(env, o.Get("local"), "local");
  s.remote = EndpointArg(env, o.Get("remote"), "remote");
  if (s.local.family() != s.remote.family()) ThrowInvalidArg(env, "local and remote must be of one family");
  s.send_seq = U32(env, o, "sendSeq");
  s.send_queue = Bytes(env, o, "sendQueue");
  s.unsent = U32(env, o, "sendUnsent");
  if (s.unsent > s.send_queue.size()) ThrowInvalidArg(env, "sendUnsent must not exceed the send queue");
  s.recv_seq = U32(env, o, "recvSeq");
  s.recv_queue = Bytes(env, o, "recvQueue");
  s.mss = static_cast<uint32_t>(IntValue(env, o.Get("mss"), "mss", 1, 65535));
  s.sack = Bool(env, o, "sack");
  s.timestamps = Bool(env, o, "timestamps");
  s.wscale = Bool(env, o, "wscale");
  s.snd_wscale = static_cast<uint32_t>(IntValue(env, o.Get("sndWscale"), "sndWscale", 0, 14));
  s.rcv_wscale = static_cast<uint32_t>(IntValue(env, o.Get("rcvWscale"), "rcvWscale", 0, 14));
  s.timestamp = U32(env, o, "timestamp");
  s.window.snd_wl1 = U32(env, o, "sndWl1");
  s.window.snd_wnd = U32(env, o, "sndWnd");
  s.window.max_window = U32(env, o, "maxWindow");
  s.window.rcv_wnd = U32(env, o, "rcvWnd");
  s.window.rcv_wup = U32(env, o, "rcvWup");
  s.sndbuf = static_cast<int>(IntValue(env, o.Get("sndbuf"), "sndbuf", 0, INT32_MAX));
  s.rcvbuf = static_cast<int>(IntValue(env, o.Get("rcvbuf"), "rcvbuf", 0, INT32_MAX));
  s.transparent = o.Has("transparent") && o.Get("transparent").ToBoolean().Value();
  return s;
}

Napi::Object ResultJs(Napi::Env env, const RestoreResult& r) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("durationUs", r.duration_us);
  if (r.fd >= 0) {
    o.Set("fd", r.fd);
    o.Set("pending", Napi::Number::New(env, r.pending));
  } else {
    o.Set("error", ToJs(env, r.error).Value());
  }
  return o;
}

// tcpRepairRestore(state) -> { fd, pending, durationUs }: one connection, on the JS thread
// (about 20 syscalls: tens of microseconds). Throws the failing syscall's error; no fd is left
// open on failure (the socket is closed while still in repair mode: nothing is sent).
Napi::Value TcpRepairRestore(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RestoreSpec s = SpecArg(env, info[0]);
  RestoreResult r = RestoreOne(s);
  if (r.fd < 0) throw ToJs(env, r.error);
  return ResultJs(env, r);
}

class RestoreWorker : public Napi::AsyncWorker {
 public:
  RestoreWorker(Napi::Env env, std::vector<RestoreSpec> specs)
      : Napi::AsyncWorker(env, "takeover:tcpRepairRestore"),
        deferred_(Napi::Promise::Deferred::New(env)),
        specs_(std::move(specs)) {}
  ~RestoreWorker() override {
    // A result never handed to JS (the environment went away) must not leak its fd.
    if (!delivered_)
      for (auto& r : results_)
        if (r.fd >= 0) close(r.fd);
  }
  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    results_.reserve(specs_.size());
    for (const auto& s : specs_) results_.push_back(RestoreOne(s));
  }
  void OnOK() override {
    Napi::Env env = Env();
    Napi::Array out = Napi::Array::New(env, results_.size());
    delivered_ = true;
    for (size_t i = 0; i < results_.size(); i++) out.Set(static_cast<uint32_t>(i), ResultJs(env, results_[i]));
    deferred_.Resolve(out);
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  std::vector<RestoreSpec> specs_;
  std::vector<RestoreResult> results_;
  bool delivered_ = false;
};

constexpr uint32_t kMaxBatch = 65536;

// tcpRepairRestoreAsync(states[]) -> Promise<result[]>: each { fd, pending, durationUs } or
// { error, durationUs }, in order, restored one after another on a libuv worker.
Napi::Value TcpRepairRestoreAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsArray()) ThrowInvalidArg(env, "states must be an array");
  auto arr = info[0].As<Napi::Array>();
  if (arr.Length() > kMaxBatch) ThrowInvalidArg(env, "at most 65536 states per batch");
  std::vector<RestoreSpec> specs;
  specs.reserve(arr.Length());
  for (uint32_t i = 0; i < arr.Length(); i++) specs.push_back(SpecArg(env, arr.Get(i)));
  auto* w = new RestoreWorker(env, std::move(specs));
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

// tcpInfoOf(fd): the TCP_INFO fields that tell whether a connection kept its negotiated options
// (state, options bits, wscale both ways, MSS both ways, RTT in µs, cwnd, retransmits).
Napi::Value TcpInfoOf(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  tcp_info ti{};
  socklen_t tl = sizeof ti;
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &tl) != 0) ThrowErrno(env, "getsockopt", errno);
  Napi::Object o = Napi::Object::New(env);
  o.Set("state", ti.tcpi_state);
  o.Set("options", ti.tcpi_options);
  o.Set("sndWscale", ti.tcpi_snd_wscale);
  o.Set("rcvWscale", ti.tcpi_rcv_wscale);
  o.Set("sndMss", ti.tcpi_snd_mss);
  o.Set("rcvMss", ti.tcpi_rcv_mss);
  o.Set("rttUs", ti.tcpi_rtt);
  o.Set("sndCwnd", ti.tcpi_snd_cwnd);
  o.Set("totalRetrans", ti.tcpi_total_retrans);
  o.Set("bytesAcked", static_cast<double>(ti.tcpi_bytes_acked));
  o.Set("bytesReceived", static_cast<double>(ti.tcpi_bytes_received));
  return o;
}

}  // namespace

void InitTcpRepair(Napi::Env env, Napi::Object exports) {
  exports.Set("tcpRepairDump", Napi::Function::New(env, TcpRepairDump, "tcpRepairDump"));
  exports.Set("tcpRepairRestore", Napi::Function::New(env, TcpRepairRestore, "tcpRepairRestore"));
  exports.Set("tcpRepairRestoreAsync", Napi::Function::New(env, TcpRepairRestoreAsync, "tcpRepairRestoreAsync"));
  exports.Set("tcpInfoOf", Napi::Function::New(env, TcpInfoOf, "tcpInfoOf"));
}

}  // namespace takeover
