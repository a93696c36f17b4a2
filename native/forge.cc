// Forged TCP segments: buildSegment(spec) returns the bytes, RawSender sends them through a
// header-included raw socket so the agent can speak for a connection whose owner is gone.
// A link-local destination (fe80::/10, 169.254.0.0/16) is only meaningful on one link: the
// routing table has such a route on every interface and would pick any of them, so a sender
// made for an interface sends them out of that interface (IPv6: the scope id; IPv4: the
// outgoing interface in IP_PKTINFO), and one made without refuses them.
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <array>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <string>

#include "address_arg.h"
#include "arg_checks.h"
#include "errors.h"
#include "modules.h"
#include "segment_builder.h"
#include "unique_fd.h"

namespace takeover {
namespace {

// Every packet the agent forges carries this mark, so netfilter rules (and the lab) can tell
// our own segments apart from the traffic they are meant to end.
constexpr int kForgeMark = 0x7a6b;

// spec[field] as an integer in [min, max], or fallback when it is undefined.
int64_t OptionalInt(Napi::Env env, Napi::Object spec, const char* field, int64_t min, int64_t max,
                    int64_t fallback) {
  Napi::Value v = spec.Get(field);
  if (v.IsUndefined()) return fallback;
  return IntValue(env, v, (std::string("spec.") + field).c_str(), min, max);
}

int64_t RequiredInt(Napi::Env env, Napi::Object spec, const char* field, int64_t min, int64_t max) {
  return IntValue(env, spec.Get(field), (std::string("spec.") + field).c_str(), min, max);
}

// Validates a JS SegmentSpec into fields. The payload pointer borrows the spec's Uint8Array,
// which stays alive for the synchronous call that uses it.
SegmentFields ParseSpec(Napi::Env env, Napi::Value value) {
  if (!value.IsObject()) ThrowInvalidArg(env, "spec must be an object");
  Napi::Object spec = value.As<Napi::Object>();
  SegmentFields f;

  IpAddress src = AddressValue(env, spec.Get("src"), "spec.src");
  IpAddress dst = AddressValue(env, spec.Get("dst"), "spec.dst");
  if (src.family != dst.family) {
    ThrowInvalidArg(env, "spec.dst must be of the same address family as spec.src");
  }
  f.family = src.family;
  std::memcpy(f.src, src.bytes, sizeof f.src);
  std::memcpy(f.dst, dst.bytes, sizeof f.dst);

  f.sport = static_cast<uint16_t>(RequiredInt(env, spec, "sport", 0, 0xffff));
  f.dport = static_cast<uint16_t>(RequiredInt(env, spec, "dport", 0, 0xffff));
  f.seq = static_cast<uint32_t>(RequiredInt(env, spec, "seq", 0, 0xffffffff));
  f.ack = static_cast<uint32_t>(RequiredInt(env, spec, "ack", 0, 0xffffffff));
  f.flags = static_cast<uint8_t>(RequiredInt(env, spec, "flags", 0, 0xff));
  f.window = static_cast<uint16_t>(OptionalInt(env, spec, "window", 0, 0xffff, 65535));
  f.urgentPointer = static_cast<uint16_t>(OptionalInt(env, spec, "urgentPointer", 0, 0xffff, 0));
  f.ttl = static_cast<uint8_t>(OptionalInt(env, spec, "ttl", 1, 255, 64));

  Napi::Value tsval = spec.Get("tsval");
  if (!tsval.IsUndefined()) {
    f.timestamp = true;
    f.tsval = static_cast<uint32_t>(IntValue(env, tsval, "spec.tsval", 0, 0xffffffff));
    f.tsecr = static_cast<uint32_t>(OptionalInt(env, spec, "tsecr", 0, 0xffffffff, 0));
  } else if (!spec.Get("tsecr").IsUndefined()) {
    // A lone TSecr cannot be sent (the option carries both); refusing beats dropping it.
    ThrowInvalidArg(env, "spec.tsecr requires spec.tsval");
  }

  Napi::Value payload = spec.Get("payload");
  if (!payload.IsUndefined()) {
    if (!payload.IsTypedArray() ||
        payload.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
      ThrowInvalidArg(env, "spec.payload must be a Uint8Array or Buffer");
    }
    auto bytes = payload.As<Napi::Uint8Array>();
    if (bytes.ByteLength() > kMaxForgedPayload) {
      ThrowInvalidArg(env, "spec.payload must be at most " + std::to_string(kMaxForgedPayload) +
                               " bytes, got " + std::to_string(bytes.ByteLength()));
    }
    f.payload = bytes.Data();
    f.payloadLen = bytes.ByteLength();
  }
  return f;
}

Napi::Value BuildSegmentJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  SegmentFields f = ParseSpec(env, info[0]);
  Napi::Buffer<uint8_t> out = Napi::Buffer<uint8_t>::New(env, SegmentLength(f));
  BuildSegment(f, std::span<uint8_t>(out.Data(), out.Length()));
  return out;
}

bool IsLinkLocal(int family, const uint8_t* addr) {
  if (family == AF_INET) return addr[0] == 169 && addr[1] == 254;
  return addr[0] == 0xfe && (addr[1] & 0xc0) == 0x80;
}

std::string AddressText(int family, const uint8_t* addr) {
  char text[INET6_ADDRSTRLEN] = {};
  inet_ntop(family, addr, text, sizeof text);
  return text;
}

class RawSender : public Napi::ObjectWrap<RawSender> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "RawSender",
                       {InstanceMethod<&RawSender::Send>("send"),
                        InstanceMethod<&RawSender::Close>("close")});
  }

  explicit RawSender(const Napi::CallbackInfo& info) : Napi::ObjectWrap<RawSender>(info) {
    Napi::Env env = info.Env();
    int version = static_cast<int>(IntArg(info, 0, "family", 4, 6));
    if (version == 5) ThrowInvalidArg(env, "family must be 4 or 6");
    family_ = version == 4 ? AF_INET : AF_INET6;
    // Optional: the interface link-local destinations are on (ENODEV when there is none).
    if (info.Length() > 1 && !info[1].IsUndefined()) {
      ifindex_ = IfIndex(env, IfnameValue(env, info[1], "interface"));
    }
    // IPPROTO_RAW means "header included" for both families (IPv6 since Linux 4.5): the
    // kernel sends our bytes as they are, so source address and TTL are ours to choose.
    // An IPPROTO_RAW socket also never receives anything, so no receive queue builds up.
    UniqueFd fd(socket(family_, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW));
    if (!fd) ThrowErrno(env, "socket", errno);
    if (setsockopt(fd.get(), SOL_SOCKET, SO_MARK, &kForgeMark, sizeof kForgeMark) != 0) {
      ThrowErrno(env, "setsockopt", errno);
    }
    fd_ = std::move(fd);
  }

 private:
  // One sendmsg on a raw socket only queues the packet to the device (or drops it when the
  // queue is full), so doing it synchronously on the JS thread never blocks meaningfully.
  Napi::Value Send(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!fd_) ThrowErrno(env, "sendmsg", EBADF);
    SegmentFields f = ParseSpec(env, info[0]);
    if (f.family != family_) {
      ThrowInvalidArg(env, std::string("spec.src must be an ") +
                               (family_ == AF_INET ? "IPv4" : "IPv6") +
                               " address for this sender");
    }
    std::array<uint8_t, kMaxForgedPacket> packet;
    size_t len = BuildSegment(f, packet);

    const bool linkLocal = IsLinkLocal(family_, f.dst);
    if (linkLocal && ifindex_ == 0) {
      ThrowInvalidArg(env, "spec.dst " + AddressText(family_, f.dst) +
                               " is link-local: it needs a sender made for its interface");
    }
    sockaddr_storage to{};
    socklen_t toLen;
    // Control message for IPv4's outgoing interface (IP_PKTINFO), sized for one in_pktinfo.
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(in_pktinfo))] = {};
    msghdr msg{};
    iovec iov{packet.data(), len};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (family_ == AF_INET) {
      auto* sin = reinterpret_cast<sockaddr_in*>(&to);
      sin->sin_family = AF_INET;
      std::memcpy(&sin->sin_addr, f.dst, 4);
      toLen = sizeof *sin;
      if (linkLocal) {
        msg.msg_control = control;
        msg.msg_controllen = sizeof control;
        cmsghdr* cm = CMSG_FIRSTHDR(&msg);
        cm->cmsg_level = IPPROTO_IP;
        cm->cmsg_type = IP_PKTINFO;
        cm->cmsg_len = CMSG_LEN(sizeof(in_pktinfo));
        in_pktinfo pi{};
        pi.ipi_ifindex = static_cast<int>(ifindex_);  // source stays the header's own
        std::memcpy(CMSG_DATA(cm), &pi, sizeof pi);
      }
    } else {
      auto* sin6 = reinterpret_cast<sockaddr_in6*>(&to);
      sin6->sin6_family = AF_INET6;
      // sin6_port must be 0 (or the socket's protocol) on a raw socket.
      std::memcpy(&sin6->sin6_addr, f.dst, 16);
      if (linkLocal) sin6->sin6_scope_id = ifindex_;
      toLen = sizeof *sin6;
    }
    msg.msg_name = &to;
    msg.msg_namelen = toLen;
    ssize_t n;
    do {
      n = sendmsg(fd_.get(), &msg, 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0) ThrowErrno(env, "sendmsg", errno);
    return Napi::Number::New(env, static_cast<double>(n));
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    fd_.reset();
    return info.Env().Undefined();
  }

  int family_ = AF_INET;
  unsigned ifindex_ = 0;  // 0: made without an interface
  UniqueFd fd_;
};

}  // namespace

void InitForge(Napi::Env env, Napi::Object exports) {
  exports.Set("buildSegment", Napi::Function::New<BuildSegmentJs>(env, "buildSegment"));
  exports.Set("RawSender", RawSender::Define(env));
}

}  // namespace takeover
