// AddressProbe: asks a link whether anyone holds an address, before this host adds it.
//   IPv4: an ARP probe (RFC 5227 section 2.1.1): an ARP request with sender IP 0.0.0.0, target
//         hardware address zero, target IP the address, broadcast. A host holding the address
//         answers with an ARP reply (Linux: arp_process(), the `sip == 0` branch).
//   IPv6: a DAD Neighbour Solicitation (RFC 4862 section 5.4.2): source ::, destination the
//         solicited-node multicast group of the address, hop limit 255, target the address, no
//         source link-layer address option. A host holding the address answers with a
//         Neighbour Advertisement to ff02::1 (Linux: ndisc_recv_ns(), the `dad` branch).
// One packet socket per probe object, bound to the interface and to ARP or IPv6, with the
// caller's classic BPF filter (src/net/bpf-filter.ts: only answers about this address reach
// it), watched with uv_poll: frames go to JS as they come, never a blocking read. Which frame
// is an answer, how long to wait and what to do about it are decided in TypeScript
// (src/net/address-probe.ts). The socket is closed on a libuv worker: closing a packet socket
// waits for an RCU grace period (synchronize_net, ~10 ms), too long for the event loop.
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <array>
#include <cstdio>
#include <memory>
#include <string>

#include "address_arg.h"
#include "errors.h"
#include "ether_frame.h"
#include "inet_checksum.h"
#include "modules.h"
#include "socket_filter.h"
#include "unique_fd.h"
#include "uv_poll_watch.h"

namespace takeover {
namespace {

// RFC 5227 2.1.1: "an ARP Request packet, broadcast on the local link, with the 'sender
// hardware address' set to the hardware address of the interface sending the packet, the
// 'sender IP address' field set to all zeroes, ... the 'target hardware address' field is
// ignored and SHOULD be set to all zeroes. The 'target IP address' field MUST be set to the
// address being probed."
NeighFrame ArpProbe(const Mac& mac, const uint8_t address[4]) {
  return ArpRequest(mac, nullptr, address);
}

// RFC 4862 5.4.2: a Neighbor Solicitation with the address as target, IP source the
// unspecified address, IP destination the solicited-node multicast address of the target
// (ff02::1:ffXX:XXXX, the address's low 24 bits; RFC 4291 2.7.1), on Ethernet 33:33 + its low
// 32 bits (RFC 2464 7). Hop limit 255 (RFC 4861 7.1: receivers drop any other). No source
// link-layer address option: it MUST NOT be included with an unspecified source (RFC 4861 4.3).
NeighFrame DadSolicitation(const Mac& mac, const uint8_t address[16]) {
  const uint8_t group[16] = {0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, address[13], address[14], address[15]};
  const Mac group_mac = {0x33, 0x33, group[12], group[13], group[14], group[15]};
  const uint8_t unspecified[16] = {};
  uint8_t icmp[24] = {135};  // Neighbour Solicitation; code, checksum, reserved: zero
  std::memcpy(icmp + 8, address, 16);  // target
  return NdpFrame(mac, group_mac, unspecified, group, icmp, sizeof icmp);  // 78 bytes
}

// The frames that wake the probe are its filter's: a few per probe at most. Bounded per
// wake-up all the same (a flood keeps the fd readable and is read on the next turns).
constexpr int kMaxFramesPerWake = 64;
// An ARP reply is 42 bytes (60 padded), a Neighbour Advertisement with its option 86: the
// filter keeps 128 at most, and anything longer is cut here as well.
constexpr size_t kFrameBytes = 256;

class AddressProbe : public Napi::ObjectWrap<AddressProbe> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "AddressProbe",
                       {InstanceMethod<&AddressProbe::Send>("send"), InstanceMethod<&AddressProbe::Start>("start"),
                        InstanceMethod<&AddressProbe::Close>("close"), InstanceMethod<&AddressProbe::Read>("read"), InstanceAccessor<&AddressProbe::MacText>("mac")});
  }

  // new AddressProbe(ifname, address, filter): the socket, bound and filtered; nothing sent.
  explicit AddressProbe(const Napi::CallbackInfo& info) : Napi::ObjectWrap<AddressProbe>(info) {
    Napi::Env env = info.Env();
    std::string ifname = IfnameValue(env, info[0]);
    IpAddress addr = AddressValue(env, info[1], "address");
    if (!info[2].IsBuffer()) ThrowInvalidArg(env, "filter must be a Buffer of struct sock_filter");
    unsigned ifindex = IfIndex(env, ifname);
    // Protocol 0 until bind(): nothing is queued on the socket before the filter is in place.
    UniqueFd fd(socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd) ThrowErrno(env, "socket", errno);
    mac_ = InterfaceMac(env, fd.get(), ifname, "AddressProbe");
    AttachFilter(env, fd.get(), info[2]);
    frame_ = addr.family == AF_INET ? ArpProbe(mac_, addr.bytes) : DadSolicitation(mac_, addr.bytes);
    sockaddr_ll sll{};
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = htons(frame_.ethertype);
    sll.sll_ifindex = static_cast<int>(ifindex);
    if (bind(fd.get(), reinterpret_cast<sockaddr*>(&sll), sizeof sll) < 0) ThrowErrno(env, "bind", errno);
    ifindex_ = static_cast<int>(ifindex);
    fd_ = std::move(fd);
    env_ = env;
    napi_add_env_cleanup_hook(env, &AddressProbe::EnvCleanup, this);
  }

  ~AddressProbe() override {
    StopPoll();
    if (env_) napi_remove_env_cleanup_hook(env_, &AddressProbe::EnvCleanup, this);
  }

 private:
  // The interface's MAC as aa:bb:cc:dd:ee:ff (what the probe sends as its sender address).
  Napi::Value MacText(const Napi::CallbackInfo& info) {
    char text[18];
    std::snprintf(text, sizeof text, "%02x:%02x:%02x:%02x:%02x:%02x", mac_[0], mac_[1], mac_[2], mac_[3], mac_[4], mac_[5]);
    return Napi::String::New(info.Env(), text);
  }

  // send(): one probe frame onto the link. Throws the sendto error (EBADF once closed).
  Napi::Value Send(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!fd_) ThrowErrno(env, "sendto", EBADF);
    sockaddr_ll to{};
    to.sll_family = AF_PACKET;
    to.sll_protocol = htons(frame_.ethertype);
    to.sll_ifindex = ifindex_;
    to.sll_halen = ETH_ALEN;
    std::memcpy(to.sll_addr, frame_.dst.data(), ETH_ALEN);
    ssize_t n;
    do {  // one frame to the device queue: never blocks meaningfully (and the socket is non-blocking)
      n = sendto(fd_.get(), frame_.bytes.data(), frame_.len, 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
    } while (n < 0 && errno == EINTR);
    if (n < 0) ThrowErrno(env, "sendto", errno);
    return env.Undefined();
  }

  // start(onFrames, onError): onFrames(frames: Buffer[], timeMs) for the frames the filter let
  // through that this host did not send (each from its Ethernet header); onError(err) when
  // the socket reports an error (ENETDOWN: the interface went down), after which it watches on.
  Napi::Value Start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!fd_) ThrowErrno(env, "uv_poll_start", EBADF);
    if (!info[0].IsFunction() || !info[1].IsFunction()) ThrowInvalidArg(env, "start(onFrames, onError) needs two functions");
    if (poll_.active()) return env.Undefined();
    onFrames_ = Napi::Persistent(info[0].As<Napi::Function>());
    onError_ = Napi::Persistent(info[1].As<Napi::Function>());
    asyncContext_ = std::make_unique<Napi::AsyncContext>(env, "takeover:address-probe");
    uv_loop_t* loop = nullptr;
    napi_get_uv_event_loop(env, &loop);
    int rc = poll_.Start(loop, fd_.get(), [this](int status) { status < 0 ? OnPollError() : Drain(); });
    if (rc != 0) {
      onFrames_.Reset();
      onError_.Reset();
      asyncContext_.reset();
      ThrowErrno(env, "uv_poll_start", -rc);
    }
    Ref();  // kept alive while watching
    return env.Undefined();
  }

  // The frames queued now (at most kMaxFramesPerWake), without this host's own; never waits.
  Napi::Array ReadFrames(Napi::Env env) {
    Napi::Array frames = Napi::Array::New(env);
    if (!fd_) return frames;
    uint32_t n = 0;
    uint8_t buf[kFrameBytes];
    for (int i = 0; i < kMaxFramesPerWake; i++) {
      sockaddr_ll from{};
      socklen_t fromLen = sizeof from;
      ssize_t got = recvfrom(fd_.get(), buf, sizeof buf, MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&from), &fromLen);
      if (got < 0) {
        if (errno == EINTR) continue;
        break;  // EAGAIN: drained (an error also wakes the poll with a status: OnPollError)
      }
      if (from.sll_pkttype == PACKET_OUTGOING) continue;  // this host's own frames
      const size_t len = static_cast<size_t>(got) < sizeof buf ? static_cast<size_t>(got) : sizeof buf;
      frames.Set(n++, Napi::Buffer<uint8_t>::Copy(env, buf, len));
    }
    return frames;
  }

  // read(): Buffer[], what is queued on the socket now, read at once (the same frames onFrames
  // gets; for a caller whose timer ran before the poll in the same turn of the loop).
  Napi::Value Read(const Napi::CallbackInfo& info) { return ReadFrames(info.Env()); }

  void Drain() {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    Napi::Array frames = ReadFrames(env);
    if (frames.Length() == 0 || onFrames_.IsEmpty()) return;
    using namespace std::chrono;
    const double timeMs = duration<double, std::milli>(system_clock::now().time_since_epoch()).count();
    Call(onFrames_, {frames, Napi::Number::New(env, timeMs)});
  }

  // libuv stops watching an fd that reports an error (POLLERR). Reading SO_ERROR takes it; the
  // socket stays bound and watching resumes. An error reading does not take would wake the
  // loop without end: then the probe stops watching (and says so through onError).
  void OnPollError() {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd_.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    Drain();                          // what arrived before the error
    if (!poll_.active()) return;      // closed from within onFrames
    const bool resumed = err != 0 && poll_.Resume() == 0;
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    Napi::Value e = ErrnoError(env, "recvfrom", err != 0 ? err : EIO).Value();
    if (resumed) {
      Call(onError_, {e});
      return;
    }
    // Stopped for good: onError is told once more, after the watch is let go.
    Napi::FunctionReference last = std::move(onError_);
    auto ctx = std::move(asyncContext_);
    StopPoll();
    if (last.IsEmpty() || !ctx) return;
    try {
      last.MakeCallback(Value(), {e}, *ctx);
    } catch (const Napi::Error& thrown) {
      napi_fatal_exception(env, thrown.Value());
    }
  }

  // Calls into JS; the callback may close the probe (which resets the callbacks and context).
  void Call(Napi::FunctionReference& cb, const std::initializer_list<napi_value>& args) {
    if (cb.IsEmpty() || !asyncContext_) return;
    try {
      cb.MakeCallback(Value(), args, *asyncContext_);
    } catch (const Napi::Error& e) {
      // A throwing listener is the application's bug: surface it as Node would.
      napi_fatal_exception(Env(), e.Value());
    }
  }

  // Stops the poll. JS state (callbacks, our own reference) is only touched when JS may run,
  // i.e. not during finalization or env teardown.
  void StopPoll() {
    if (!poll_.active()) return;
    poll_.Stop();
    if (!finalizing_) {
      onFrames_.Reset();
      onError_.Reset();
      asyncContext_.reset();
      Unref();
    }
  }

  // close(): Promise<void>, resolved once the socket is closed (on a libuv worker). Safe to
  // call more than once; send() and start() fail with EBADF afterwards.
  Napi::Value Close(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    StopPoll();  // uv_poll_stop takes the fd out of epoll before the worker closes it
    auto* worker = new CloseWorker(env, std::move(fd_));
    Napi::Promise promise = worker->Promise();
    worker->Queue();
    return promise;
  }

  class CloseWorker : public Napi::AsyncWorker {
   public:
    CloseWorker(Napi::Env env, UniqueFd fd)
        : Napi::AsyncWorker(env, "takeover:address-probe-close"), fd_(std::move(fd)), deferred_(Napi::Promise::Deferred::New(env)) {}
    Napi::Promise Promise() { return deferred_.Promise(); }
    void Execute() override { fd_.reset(); }
    void OnOK() override { deferred_.Resolve(Env().Undefined()); }
    void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

   private:
    UniqueFd fd_;
    Napi::Promise::Deferred deferred_;
  };

  void Finalize(Napi::Env) override { finalizing_ = true; }

  static void EnvCleanup(void* arg) { static_cast<AddressProbe*>(arg)->ReleaseAtTeardown(); }
  void ReleaseAtTeardown() {
    finalizing_ = true;  // no JS calls at teardown
    StopPoll();
    fd_.reset();
    env_ = nullptr;
  }

  UniqueFd fd_;
  Mac mac_{};
  int ifindex_ = 0;
  NeighFrame frame_;
  bool finalizing_ = false;
  UvPollWatch poll_;
  Napi::FunctionReference onFrames_;
  Napi::FunctionReference onError_;
  std::unique_ptr<Napi::AsyncContext> asyncContext_;
  napi_env env_ = nullptr;
};

}  // namespace

void InitAddressProbe(Napi::Env env, Napi::Object exports) { exports.Set("AddressProbe", AddressProbe::Define(env)); }

}  // namespace takeover
