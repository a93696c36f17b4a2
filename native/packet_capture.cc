// Capture: an AF_PACKET socket with a classic BPF filter, watched by uv_poll on the event loop.
// Two ways to read it:
// - 'block' (default): a TPACKET_V3 receive ring. Cheapest per packet under load, but the kernel
//   hands a block over only when it is full or after tp_retire_blk_tov (blockTimeoutMs, default
//   2 ms): that much latency.
// - 'packet': no ring; recvmmsg on each wake-up, which comes per packet. An agent that must tell
//   its peers about a new connection before it may die uses this (tens of microseconds).
// One interface, or every interface ('any': a SOCK_DGRAM socket bound to no interface, so every
// frame starts at its network header whatever the link type).
// Each segment is parsed into the flow table; segments are turned into JS objects only when JS
// asked for them (setDeliver), optionally only those with some flags (deliverFlags), with
// payload copies only up to payloadBytes. Also exports parsePacket() so tests and fuzzing reach
// the same parser.
#include <arpa/inet.h>
#include <linux/filter.h>
#include <net/if_arp.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "arg_checks.h"
#include "errors.h"
#include "modules.h"
#include "packet_parse.h"
#include "packet_ring.h"
#include "segment_object.h"
#include "socket_filter.h"
#include "tcp_flows.h"
#include "unique_fd.h"
#include "uv_poll_watch.h"

namespace takeover {
namespace {

double NowMs() {
  using namespace std::chrono;
  return duration<double, std::milli>(system_clock::now().time_since_epoch()).count();
}

// Flow snapshots go to JS as one Float64Array plus the address strings: creating thousands of
// objects property by property through Node-API costs ~18 us a flow, the flat copy ~1 us, and
// src/net/flow-tracker.ts builds the objects in JS. The field order is kFlowFields/kSideFields
// below and FLOW_FIELDS/SIDE_FIELDS in flow-tracker.ts.
constexpr uint32_t kSideFields = 13;
constexpr uint32_t kFlowFields = 5 + 2 * kSideFields;

void PutSide(double* out, const Flow& f, const FlowSideState& s) {
  out[0] = s.ep.port;
  out[1] = s.nextSeq;
  out[2] = s.ack;
  out[3] = f.ScaledWindow(s);
  out[4] = f.WindowShift(s);
  out[5] = s.mss;
  out[6] = s.sackPermitted ? 1 : 0;
  out[7] = s.tsKnown ? s.tsval : 0;
  out[8] = s.tsKnown ? s.tsecr : 0;
  out[9] = s.finSent ? 1 : 0;
  out[10] = s.lastSeenMs;
  out[11] = static_cast<double>(s.packets);
  out[12] = static_cast<double>(s.bytes);
}

class Capture : public Napi::ObjectWrap<Capture> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Capture",
                       {InstanceMethod<&Capture::Start>("start"), InstanceMethod<&Capture::Stop>("stop"),
                        InstanceMethod<&Capture::Close>("close"), InstanceMethod<&Capture::Open>("open"),
                        InstanceMethod<&Capture::Flows>("flows"),
                        InstanceMethod<&Capture::Stats>("stats"), InstanceMethod<&Capture::SetDeliver>("setDeliver"),
                        InstanceMethod<&Capture::SetFilter>("setFilter"), InstanceMethod<&Capture::Find>("find")});
  }

  explicit Capture(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Capture>(info) {
    Napi::Env env = info.Env();
    if (!info[0].IsObject()) ThrowInvalidArg(env, "options must be an object");
    Napi::Object opts = info[0].As<Napi::Object>();
    if (!opts.Get("interface").IsString()) ThrowInvalidArg(env, "options.interface must be a string");
    std::string ifname = opts.Get("interface").As<Napi::String>();
    if (ifname.empty() || ifname.size() >= IFNAMSIZ) ThrowInvalidArg(env, "options.interface must be an interface name");
    auto optInt = [&](const char* name, int64_t min, int64_t max, int64_t fallback) {
      Napi::Value v = opts.Get(name);
      return v.IsUndefined() ? fallback : IntValue(env, v, (std::string("options.") + name).c_str(), min, max);
    };
    const long page = sysconf(_SC_PAGESIZE);
    shape_.blockSize = static_cast<uint32_t>(optInt("blockSize", page, 64 << 20, 1 << 20));
    shape_.blockCount = static_cast<uint32_t>(optInt("blockCount", 1, 1024, 8));
    if (shape_.blockSize % page) ThrowInvalidArg(env, "options.blockSize must be a multiple of the page size");
    payloadBytes_ = static_cast<uint32_t>(optInt("payloadBytes", 0, 65535, 0));
    shape_.blockTimeoutMs = static_cast<uint32_t>(optInt("blockTimeoutMs", 1, 1000, 2));
    idleMs_ = static_cast<double>(optInt("idleTimeoutMs", 1, int64_t{1} << 40, 600000));
    Napi::Value flags = opts.Get("deliverFlags");
    if (!flags.IsUndefined()) {
      deliverFlags_ = static_cast<uint8_t>(IntValue(env, flags, "options.deliverFlags", 0, 255));
      deliverAll_ = false;
    }
    Napi::Value track = opts.Get("trackFlows");
    if (!track.IsUndefined()) trackFlows_ = track.ToBoolean();
    Napi::Value wakeup = opts.Get("wakeup");
    if (!wakeup.IsUndefined()) {
      std::string w = wakeup.IsString() ? wakeup.As<Napi::String>().Utf8Value() : "";
      if (w != "block" && w != "packet") ThrowInvalidArg(env, "options.wakeup must be 'block' or 'packet'");
      perPacket_ = w == "packet";
    }
    const bool background = opts.Get("background").ToBoolean();

    // 'any': every interface. A SOCK_DGRAM packet socket hands over (and filters) each frame
    // from its network header, so links with and without Ethernet headers look alike.
    const bool all = ifname == "any";
    int ifindex = 0;
    if (!all) {
      ifindex = static_cast<int>(if_nametoindex(ifname.c_str()));
      if (ifindex == 0) ThrowErrno(env, "if_nametoindex", errno);
    }
    // Protocol 0: the socket receives nothing until bind(), so no frame slips in before the
    // filter and the ring are in place.
    UniqueFd fd(socket(AF_PACKET, (all ? SOCK_DGRAM : SOCK_RAW) | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd) ThrowErrno(env, "socket", errno);

    if (all) {
      link_ = LinkType::kRawIp;
    } else {
      ifreq ifr{};
      std::memcpy(ifr.ifr_name, ifname.c_str(), ifname.size());
      if (ioctl(fd.get(), SIOCGIFHWADDR, &ifr) < 0) ThrowErrno(env, "ioctl", errno);
      uint16_t hw = ifr.ifr_hwaddr.sa_family;
      link_ = (hw == ARPHRD_ETHER || hw == ARPHRD_LOOPBACK) ? LinkType::kEthernet : LinkType::kRawIp;
    }

    Napi::Value filter = opts.Get("filter");
    if (!filter.IsUndefined()) AttachFilter(env, fd.get(), filter);
    if (perPacket_) {
      // The original length of a truncated frame comes with each packet as auxiliary data.
      int on = 1;
      if (setsockopt(fd.get(), SOL_PACKET, PACKET_AUXDATA, &on, sizeof on) < 0) ThrowErrno(env, "setsockopt", errno);
      // Bursts (a thousand connections opening at once) must wait in the socket, not be
      // dropped: ask for 8 MiB past rmem_max (CAP_NET_ADMIN), or take what is allowed.
      int bytes = 8 << 20;
      if (setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof bytes) < 0)
        setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
      SizeBuffers();
      if (SyscallResult r = BindAllProtocols(fd.get(), ifindex); r.err) ThrowErrno(env, r.syscall, r.err);
    } else if (background) {
      ifindex_ = ifindex;
      ringPending_ = true;  // open() sets the ring up on a libuv worker
    } else {
      if (SyscallResult r = OpenRing(fd.get(), shape_, ifindex, ring_); r.err) ThrowErrno(env, r.syscall, r.err);
    }
    fd_ = std::move(fd);
    env_ = env;
    napi_add_env_cleanup_hook(env, &Capture::EnvCleanup, this);
  }

  ~Capture() override {
    Release();
    if (env_) napi_remove_env_cleanup_hook(env_, &Capture::EnvCleanup, this);
  }

 private:
  // recvmmsg batch of the 'packet' mode.
  static constexpr unsigned kBatch = 16;
  // Segments handed to JS per wake-up at most (a ring block is finished first).
  static constexpr uint32_t kMaxDelivered = 1024;

  // Each receive buffer holds the headers (256 bytes are enough for any TCP/IP header chain
  // the parser accepts) plus the payload asked for.
  void SizeBuffers() {
    frameBytes_ = 256 + payloadBytes_;
    buffers_.assign(static_cast<size_t>(kBatch) * frameBytes_, 0);
  }

  // start(onSegments): polls from now on, or, while the ring is being set up (open()), from
  // when it is ready.
  Napi::Value Start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!fd_) ThrowErrno(env, "uv_poll_start", EBADF);
    if (!info[0].IsFunction()) ThrowInvalidArg(env, "start(onSegments) needs a function");
    if (started_) return env.Undefined();
    callback_ = Napi::Persistent(info[0].As<Napi::Function>());
    asyncContext_ = std::make_unique<Napi::AsyncContext>(env, "takeover:capture");
    // A background ring that failed to set up leaves nothing to poll: stats say polling: false.
    if (!ringPending_ && !ringFailed_) {
      if (int rc = StartPoll(); rc != 0) {
        callback_.Reset();
        asyncContext_.reset();
        ThrowErrno(env, "uv_poll_start", -rc);
      }
    }
    started_ = true;
    Ref();  // a started capture is kept alive (and keeps the loop alive) until stop/close
    return env.Undefined();
  }

  int StartPoll() {
    uv_loop_t* loop = nullptr;
    napi_get_uv_event_loop(Env(), &loop);
    return poll_.Start(loop, fd_.get(), [this](int status) { status < 0 ? OnPollError() : Drain(); });
  }

  // open(): Promise<void>. For a capture made with background: true, sets the ring up on a libuv
  // worker (PACKET_RX_RING waits for an RCU grace period) and resolves once frames land in it;
  // rejects with the failing syscall's error, which is also counted in stats (pollErrors,
  // lastErrno). Resolves at once for any other capture, and once closed.
  Napi::Value Open(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto deferred = Napi::Promise::Deferred::New(env);
    if (!ringPending_ || opening_) {
      if (opening_) ThrowInvalidArg(env, "open() was called already");
      deferred.Resolve(env.Undefined());
      return deferred.Promise();
    }
    opening_ = true;
    auto* worker = new OpenWorker(env, this, deferred);
    Ref();  // the capture outlives the worker that writes into it
    worker->Queue();
    return deferred.Promise();
  }

  class OpenWorker : public Napi::AsyncWorker {
   public:
    OpenWorker(Napi::Env env, Capture* capture, Napi::Promise::Deferred deferred)
        : Napi::AsyncWorker(env, "takeover:capture-open"), capture_(capture), fd_(capture->fd_.get()), shape_(capture->shape_),
          ifindex_(capture->ifindex_), deferred_(deferred) {}
    // The fd stays the capture's: close() waits for this worker (closesAfterOpen_).
    void Execute() override { result_ = OpenRing(fd_, shape_, ifindex_, ring_); }
    void OnOK() override {
      Napi::Env env = Env();
      Napi::HandleScope scope(env);
      SyscallResult r = capture_->RingOpened(std::move(ring_), result_);
      if (r.err) deferred_.Reject(ErrnoError(env, r.syscall, r.err).Value());
      else deferred_.Resolve(env.Undefined());
      capture_->Unref();
    }

   private:
    Capture* capture_;
    int fd_;
    RingShape shape_;
    int ifindex_;
    Napi::Promise::Deferred deferred_;
    RingMapping ring_;
    SyscallResult result_;
  };

  // On the loop thread, when OpenWorker is done: takes the ring, starts polling if start() came
  // first; or releases everything if close() came first. Returns what failed, if anything.
  SyscallResult RingOpened(RingMapping ring, SyscallResult result) {
    opening_ = false;
    ringPending_ = false;
    if (!closesAfterOpen_.empty()) {
      ring_ = std::move(ring);
      QueueRelease(std::exchange(closesAfterOpen_, {}));
      return {};
    }
    if (!result.err) {
      ring_ = std::move(ring);
      if (started_) {
        if (int rc = StartPoll(); rc != 0) result = {"uv_poll_start", -rc};
      }
    } else {
      ringFailed_ = true;
    }
    if (result.err) {
      pollErrors_++;
      lastErrno_ = result.err;
    }
    return result;
  }

  Napi::Value Stop(const Napi::CallbackInfo& info) {
    StopPoll();
    return info.Env().Undefined();
  }

  // close(): Promise<void>, resolved once the socket is closed and the ring unmapped, which
  // happens on a libuv worker (closing a packet socket waits for an RCU grace period). Capturing
  // stops at once. Safe to call more than once.
  Napi::Value Close(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    StopPoll();  // uv_poll_stop takes the fd out of epoll before the worker closes it
    auto deferred = Napi::Promise::Deferred::New(env);
    if (opening_) {
      // The open worker still uses the fd: release once it is done (RingOpened).
      closesAfterOpen_.push_back(deferred);
      return deferred.Promise();
    }
    ringPending_ = false;
    QueueRelease({deferred});
    return deferred.Promise();
  }

  // Closes the socket and unmaps the ring on a worker; each deferred resolves then (an fd already
  // released: at once, in the worker's turn).
  void QueueRelease(std::vector<Napi::Promise::Deferred> waiting) {
    auto* worker = new ReleaseWorker(Env(), std::move(fd_), std::move(ring_), std::move(waiting));
    worker->Queue();
  }

  class ReleaseWorker : public Napi::AsyncWorker {
   public:
    ReleaseWorker(Napi::Env env, UniqueFd fd, RingMapping ring, std::vector<Napi::Promise::Deferred> waiting)
        : Napi::AsyncWorker(env, "takeover:capture-close"), fd_(std::move(fd)), ring_(std::move(ring)), waiting_(std::move(waiting)) {}
    void Execute() override {
      ring_.reset();
      fd_.reset();
    }
    void OnOK() override {
      for (auto& d : waiting_) d.Resolve(Env().Undefined());
    }

   private:
    UniqueFd fd_;
    RingMapping ring_;
    std::vector<Napi::Promise::Deferred> waiting_;
  };

  Napi::Value SetDeliver(const Napi::CallbackInfo& info) {
    deliver_ = info[0].ToBoolean();
    return info.Env().Undefined();
  }

  // setFilter(filter, payloadBytes?): replaces the BPF program on the live socket (the flow
  // table is kept) and, when given, how many payload bytes are delivered per segment.
  Napi::Value SetFilter(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!fd_) ThrowErrno(env, "setsockopt", EBADF);
    uint32_t payload = payloadBytes_;
    if (info.Length() > 1 && !info[1].IsUndefined()) payload = static_cast<uint32_t>(IntArg(info, 1, "payloadBytes", 0, 65535));
    AttachFilter(env, fd_.get(), info[0]);
    if (payload != payloadBytes_) {
      payloadBytes_ = payload;
      if (perPacket_) SizeBuffers();
    }
    return env.Undefined();
  }

  // flows(since?): the flow table, flat, with the table's generation; with `since` (a
  // generation an earlier call returned) only the flows updated after it: a caller that polls
  // pays one walk of the table, and JS objects only for what changed.
  Napi::Value Flows(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint64_t since = 0;
    if (info.Length() > 0 && !info[0].IsUndefined()) {
      if (!info[0].IsNumber()) ThrowInvalidArg(env, "since must be a generation number");
      double d = info[0].As<Napi::Number>().DoubleValue();
      since = d > 0 ? static_cast<uint64_t>(d) : 0;
    }
    // Expiry otherwise runs only when frames arrive: a quiet link must not keep dead flows.
    const double now = NowMs();
    if (now - lastExpire_ > 1000) {
      flows_.Expire(now, idleMs_);
      lastExpire_ = now;
    }
    std::vector<const Flow*> changed;
    flows_.ForEach([&](const Flow& f) {
      if (f.updated > since) changed.push_back(&f);
    });
    const auto n = static_cast<uint32_t>(changed.size());
    Napi::Float64Array nums = Napi::Float64Array::New(env, static_cast<size_t>(n) * kFlowFields);
    Napi::Array addresses = Napi::Array::New(env, 2 * n);
    for (uint32_t i = 0; i < n; i++) PutFlow(nums, addresses, i, *changed[i]);
    Napi::Object o = Napi::Object::New(env);
    o.Set("count", n);
    o.Set("numbers", nums);
    o.Set("addresses", addresses);
    o.Set("generation", static_cast<double>(flows_.generation()));
    return o;
  }

  // One flow at index i of what flows() and find() return: kFlowFields numbers, two addresses.
  static void PutFlow(Napi::Float64Array& nums, Napi::Array& addresses, uint32_t i, const Flow& f) {
    double* out = nums.Data() + static_cast<size_t>(i) * kFlowFields;
    out[0] = f.family;
    out[1] = static_cast<double>(f.state);
    out[2] = f.handshakeSeen ? 1 : 0;
    out[3] = f.firstSeenMs;
    out[4] = f.lastSeenMs;
    PutSide(out + 5, f, f.a);
    PutSide(out + 5 + kSideFields, f, f.b);
    addresses.Set(2 * i, AddressText(f.family, f.a.ep.addr));
    addresses.Set(2 * i + 1, AddressText(f.family, f.b.ep.addr));
  }

  // find(x, xPort, y, yPort): the flow between two endpoints (either order), flat as flows()
  // returns it: count 0 or 1. For an entry created after its flow's first segments were taken.
  Napi::Value Find(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    FlowEndpoint x, y;
    int family = 0;
    for (int i = 0; i < 2; i++) {
      if (!info[2 * i].IsString()) ThrowInvalidArg(env, "addresses must be strings");
      std::string text = info[2 * i].As<Napi::String>().Utf8Value();
      FlowEndpoint& e = i == 0 ? x : y;
      int f = inet_pton(AF_INET, text.c_str(), e.addr) == 1 ? 4 : inet_pton(AF_INET6, text.c_str(), e.addr) == 1 ? 6 : 0;
      if (f == 0 || (family != 0 && f != family)) ThrowInvalidArg(env, "two addresses of one family are needed: " + text);
      family = f;
      e.port = static_cast<uint16_t>(IntArg(info, 2 * i + 1, "port", 0, 65535));
    }
    const Flow* f = flows_.Find(family, x, y);
    Napi::Float64Array nums = Napi::Float64Array::New(env, f ? kFlowFields : 0);
    Napi::Array addresses = Napi::Array::New(env, f ? 2 : 0);
    if (f) PutFlow(nums, addresses, 0, *f);
    Napi::Object o = Napi::Object::New(env);
    o.Set("count", f ? 1 : 0);
    o.Set("numbers", nums);
    o.Set("addresses", addresses);
    o.Set("generation", static_cast<double>(flows_.generation()));
    return o;
  }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    ReadKernelStats();
    Napi::Object o = Napi::Object::New(env);
    o.Set("packets", Napi::Number::New(env, static_cast<double>(packets_)));
    o.Set("drops", Napi::Number::New(env, static_cast<double>(drops_)));
    o.Set("malformed", Napi::Number::New(env, static_cast<double>(malformed_)));
    o.Set("flows", Napi::Number::New(env, static_cast<double>(flows_.size())));
    o.Set("refused", Napi::Number::New(env, static_cast<double>(flows_.stats().refusedFull + flows_.stats().ignoredStray)));
    o.Set("pollErrors", Napi::Number::New(env, static_cast<double>(pollErrors_)));
    o.Set("lastErrno", Napi::Number::New(env, lastErrno_));
    o.Set("polling", Napi::Boolean::New(env, poll_.active()));
    return o;
  }

  // The kernel resets its counters on every read, so they are accumulated here.
  void ReadKernelStats() {
    if (!fd_) return;
    tpacket_stats_v3 st{};
    socklen_t len = sizeof st;
    if (getsockopt(fd_.get(), SOL_PACKET, PACKET_STATISTICS, &st, &len) == 0) drops_ += st.tp_drops;
  }

  // One captured frame: into the flow table, and into the batch for JS when it is wanted.
  void Handle(std::span<const uint8_t> frame, size_t wireLength, const sockaddr_ll& sll, double timeMs, bool deliver,
              Napi::Env env, Napi::Array& batch, uint32_t& n) {
    // On loopback every packet is seen leaving and arriving: count it once.
    if (sll.sll_hatype == ARPHRD_LOOPBACK && sll.sll_pkttype == PACKET_OUTGOING) return;
    packets_++;
    TcpSegment seg;
    if (!ParseTcpFrame(frame, wireLength, link_, seg)) {
      malformed_++;
      return;
    }
    if (trackFlows_) flows_.Update(seg, timeMs);
    if (!deliver) return;
    if (!deliverAll_ && !(seg.flags & deliverFlags_) && !(payloadBytes_ > 0 && seg.payloadLength > 0)) return;
    batch.Set(n++, SegmentObject(env, seg, timeMs, payloadBytes_));
  }

  void Drain() {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    Napi::Array batch;
    uint32_t n = 0;
    const bool deliver = deliver_ && !callback_.IsEmpty();
    if (deliver) batch = Napi::Array::New(env);
    const double now = NowMs();
    if (perPacket_) DrainSocket(now, deliver, env, batch, n);
    else DrainRing(deliver, env, batch, n);
    if (now - lastExpire_ > 1000) {
      flows_.Expire(now, idleMs_);
      lastExpire_ = now;
    }
    if (deliver && n > 0) {
      try {
        callback_.MakeCallback(Value(), {batch}, *asyncContext_);
      } catch (const Napi::Error& e) {
        // A throwing listener is the application's bug: surface it as Node would.
        napi_fatal_exception(env, e.Value());
      }
    }
  }

  void DrainRing(bool deliver, Napi::Env env, Napi::Array& batch, uint32_t& n) {
    // At most one pass over the ring per wake-up, and blocks only until ~kMaxDelivered segments
    // are on their way to JS: a flood cannot starve the event loop, and thousands of segments
    // that piled up while it was busy reach JS over several turns (the poll stays readable).
    for (uint32_t seen = 0; seen < shape_.blockCount && n < kMaxDelivered; seen++) {
      auto* block = reinterpret_cast<tpacket_block_desc*>(ring_.data() + static_cast<size_t>(current_) * shape_.blockSize);
      if (!(block->hdr.bh1.block_status & TP_STATUS_USER)) break;
      auto* hdr = reinterpret_cast<tpacket3_hdr*>(reinterpret_cast<uint8_t*>(block) + block->hdr.bh1.offset_to_first_pkt);
      for (uint32_t i = 0; i < block->hdr.bh1.num_pkts; i++) {
        auto* sll = reinterpret_cast<sockaddr_ll*>(reinterpret_cast<uint8_t*>(hdr) + TPACKET_ALIGN(sizeof(tpacket3_hdr)));
        std::span<const uint8_t> frame(reinterpret_cast<uint8_t*>(hdr) + hdr->tp_mac, hdr->tp_snaplen);
        double t = hdr->tp_sec * 1000.0 + hdr->tp_nsec / 1e6;
        Handle(frame, hdr->tp_len, *sll, t, deliver, env, batch, n);
        hdr = reinterpret_cast<tpacket3_hdr*>(reinterpret_cast<uint8_t*>(hdr) + hdr->tp_next_offset);
      }
      block->hdr.bh1.block_status = TP_STATUS_KERNEL;
      current_ = (current_ + 1) % shape_.blockCount;
    }
  }

  void DrainSocket(double now, bool deliver, Napi::Env env, Napi::Array& batch, uint32_t& n) {
    mmsghdr msgs[kBatch];
    iovec iov[kBatch];
    sockaddr_ll names[kBatch];
    // Room for one tpacket_auxdata control message per packet.
    alignas(cmsghdr) char control[kBatch][CMSG_SPACE(sizeof(tpacket_auxdata))];
    // At most this many batches per wake-up (kMaxDelivered segments), so a flood cannot starve
    // the event loop; what is left keeps the fd readable and is read on the next turn.
    for (unsigned round = 0; round < kMaxDelivered / kBatch; round++) {
      for (unsigned i = 0; i < kBatch; i++) {
        iov[i] = {buffers_.data() + static_cast<size_t>(i) * frameBytes_, frameBytes_};
        msgs[i].msg_hdr = msghdr{};
        msgs[i].msg_hdr.msg_name = &names[i];
        msgs[i].msg_hdr.msg_namelen = sizeof names[i];
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_control = control[i];
        msgs[i].msg_hdr.msg_controllen = sizeof control[i];
        msgs[i].msg_len = 0;
      }
      int got = recvmmsg(fd_.get(), msgs, kBatch, MSG_DONTWAIT, nullptr);
      if (got <= 0) return;  // EAGAIN: drained (a socket error also wakes the poll: OnPollError)
      for (int i = 0; i < got; i++) {
        size_t captured = msgs[i].msg_len;
        size_t wire = captured;
        for (cmsghdr* c = CMSG_FIRSTHDR(&msgs[i].msg_hdr); c; c = CMSG_NXTHDR(&msgs[i].msg_hdr, c)) {
          if (c->cmsg_level == SOL_PACKET && c->cmsg_type == PACKET_AUXDATA && c->cmsg_len >= CMSG_LEN(sizeof(tpacket_auxdata))) {
            tpacket_auxdata aux;
            std::memcpy(&aux, CMSG_DATA(c), sizeof aux);
            if (aux.tp_len > wire) wire = aux.tp_len;
          }
        }
        std::span<const uint8_t> frame(reinterpret_cast<const uint8_t*>(iov[i].iov_base), captured);
        Handle(frame, wire, names[i], now, deliver, env, batch, n);
      }
      if (static_cast<unsigned>(got) < kBatch) return;
    }
  }

  // libuv stops watching an fd that reports an error (POLLERR): a packet socket bound to an
  // interface gets ENETDOWN when the interface goes down. Reading SO_ERROR takes the error; the
  // socket stays bound and receives again once the interface is back, so watching resumes.
  // Counted in stats (pollErrors, lastErrno). An error that reading does not take would wake
  // the loop without end: then the capture stops, and says so (polling: false).
  void OnPollError() {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd_.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    pollErrors_++;
    lastErrno_ = err;
    Drain();  // what arrived before the error
    if (err == 0 || poll_.Resume() != 0) StopPoll();
  }

  // Stops the poll. JS state (the callback, our own reference) is only touched when JS may
  // run, i.e. not during finalization or env teardown.
  void StopPoll() {
    if (!started_) return;
    started_ = false;
    poll_.Stop();
    if (!finalizing_) {
      callback_.Reset();
      asyncContext_.reset();
      Unref();
    }
  }

  // Stops polling and frees the ring and the socket on this thread: for a capture collected or
  // torn down without close() (close() releases on a worker). While an OpenWorker still uses the
  // fd (only at env teardown: it holds a reference otherwise), the fd is left to the exit.
  void Release() {
    StopPoll();
    if (opening_) {
      (void)fd_.release();
      return;
    }
    ring_.reset();
    fd_.reset();
  }

  void Finalize(Napi::Env) override { finalizing_ = true; }

  static void EnvCleanup(void* arg) { static_cast<Capture*>(arg)->ReleaseAtTeardown(); }
  void ReleaseAtTeardown() {
    finalizing_ = true;  // no JS calls at teardown
    Release();
    env_ = nullptr;
  }

  UniqueFd fd_;
  RingMapping ring_;
  RingShape shape_;
  int ifindex_ = 0;
  bool ringPending_ = false;  // background: true, until open() has set the ring up
  bool ringFailed_ = false;   // background: true, and open() could not set the ring up
  bool opening_ = false;      // an OpenWorker is running on the fd
  std::vector<Napi::Promise::Deferred> closesAfterOpen_;  // close() calls waiting for the open worker
  bool started_ = false;
  uint32_t current_ = 0;
  uint32_t payloadBytes_ = 0;
  bool perPacket_ = false;
  std::vector<uint8_t> buffers_;  // 'packet' mode: kBatch receive buffers of frameBytes_
  size_t frameBytes_ = 0;
  double idleMs_ = 600000;
  double lastExpire_ = 0;
  LinkType link_ = LinkType::kEthernet;
  bool deliver_ = false;
  bool deliverAll_ = true;
  bool trackFlows_ = true;  // false: segments are only delivered (a socket for opens and closes)
  uint8_t deliverFlags_ = 0;
  bool finalizing_ = false;
  UvPollWatch poll_;
  Napi::FunctionReference callback_;
  std::unique_ptr<Napi::AsyncContext> asyncContext_;
  napi_env env_ = nullptr;
  FlowTable flows_;
  uint64_t packets_ = 0;
  uint64_t drops_ = 0;
  uint64_t pollErrors_ = 0;
  int lastErrno_ = 0;
  uint64_t malformed_ = 0;
};

Napi::Value ParsePacket(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsTypedArray()) ThrowInvalidArg(env, "parsePacket(buf, linkType) needs a Uint8Array");
  auto arr = info[0].As<Napi::Uint8Array>();
  int64_t link = IntValue(env, info[1], "linkType", 0, 1);
  bool verify = info.Length() > 2 && info[2].IsObject() && info[2].As<Napi::Object>().Get("verifyChecksum").ToBoolean();
  TcpSegment seg;
  std::span<const uint8_t> frame(arr.Data(), arr.ByteLength());
  if (!ParseTcpFrame(frame, arr.ByteLength(), link == 1 ? LinkType::kEthernet : LinkType::kRawIp, seg, verify)) return env.Null();
  return SegmentObject(env, seg, 0, 65535);
}

}  // namespace

void InitParse(Napi::Env env, Napi::Object exports) { exports.Set("parsePacket", Napi::Function::New<ParsePacket>(env, "parsePacket")); }

void InitCapture(Napi::Env env, Napi::Object exports) { exports.Set("Capture", Capture::Define(env)); }

}  // namespace takeover
