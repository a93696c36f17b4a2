// addAddress / removeAddress: RTM_NEWADDR and RTM_DELADDR over rtnetlink, the same requests
// `ip addr add|del` makes, without spawning ip(8) at the moment a node takes over an address.
// addressEntries: RTM_GETADDR, the state of one address on one interface (flags, prefix,
// lifetimes), so the caller can tell an address it can use from one it only has (tentative...).
// setAddressLifetime: RTM_NEWADDR with NLM_F_REPLACE and IFA_CACHEINFO, the request of
// `ip addr change ... valid_lft N preferred_lft N`: the address lease (agent/address-lease.ts).
// routesLocally: RTM_GETROUTE for one address, as `ip route get`: whether packets to it are
// delivered here (an IPv6 NODAD address is listed at once, its local route only later).
#include <linux/if_addr.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "address_arg.h"
#include "arg_checks.h"
#include "errors.h"
#include "modules.h"
#include "unique_fd.h"

namespace takeover {
namespace {

// Room for the header, ifaddrmsg and four attributes (two 16-byte addresses, one u32, one
// ifa_cacheinfo).
struct AddrRequest {
  nlmsghdr header;
  ifaddrmsg ifa;
  alignas(NLMSG_ALIGNTO) char attrs[128];
};

void AddAttr(AddrRequest& req, uint16_t type, const void* data, size_t len) {
  auto* rta = reinterpret_cast<rtattr*>(reinterpret_cast<char*>(&req) +
                                        NLMSG_ALIGN(req.header.nlmsg_len));
  rta->rta_type = type;
  rta->rta_len = static_cast<uint16_t>(RTA_LENGTH(len));
  std::memcpy(RTA_DATA(rta), data, len);
  req.header.nlmsg_len = NLMSG_ALIGN(req.header.nlmsg_len) + RTA_ALIGN(rta->rta_len);
}

// An rtnetlink socket whose reads give up after 5 s (a guard against the impossible: the kernel
// answers inside sendto).
UniqueFd OpenRoute(Napi::Env env) {
  UniqueFd fd(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
  if (!fd) ThrowErrno(env, "socket", errno);
  timeval timeout{5, 0};
  setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  return fd;
}

// Sends one request to the kernel (nl_pid 0).
template <typename Request>
void SendToKernel(Napi::Env env, const UniqueFd& fd, const Request& req) {
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  ssize_t n;
  do {
    n = sendto(fd.get(), &req, req.header.nlmsg_len, 0, reinterpret_cast<const sockaddr*>(&kernel),
               sizeof kernel);
  } while (n < 0 && errno == EINTR);
  if (n < 0) ThrowErrno(env, "sendto", errno);
}

// One read of replies into buf; returns its length.
int ReceiveSome(Napi::Env env, const UniqueFd& fd, char* buf, size_t size) {
  ssize_t n;
  do {
    n = recv(fd.get(), buf, size, 0);
  } while (n < 0 && errno == EINTR);
  if (n < 0) ThrowErrno(env, "recv", errno);
  return static_cast<int>(n);
}

// Sends req and waits for its ACK; returns 0 or the positive errno the kernel reported.
// rtnetlink handles the request inside sendto, so the ACK is queued by the time recv runs:
// doing this synchronously does not stall the event loop. The receive timeout only guards
// against the impossible.
int Transact(Napi::Env env, AddrRequest& req) {
  UniqueFd fd = OpenRoute(env);
  const uint32_t seq = 1;  // a fresh socket per request, so any constant identifies our ACK
  req.header.nlmsg_seq = seq;
  SendToKernel(env, fd, req);

  alignas(nlmsghdr) char buf[8192];
  for (;;) {
    int len = ReceiveSome(env, fd, buf, sizeof buf);
    for (auto* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
      if (h->nlmsg_seq != seq || h->nlmsg_type != NLMSG_ERROR) continue;
      if (h->nlmsg_len < NLMSG_LENGTH(sizeof(nlmsgerr))) ThrowErrno(env, "rtnetlink", EPROTO);
      return -static_cast<nlmsgerr*>(NLMSG_DATA(h))->error;
    }
  }
}

// ifa_cacheinfo's lifetime for "forever" (the kernel's INFINITY_LIFE_TIME, not in the uapi).
constexpr uint32_t kForever = 0xFFFFFFFFu;

// The request shared by add, remove and lifetime changes: the address as ip(8) sends it.
// Local and prefix address are the same: a plain (not point-to-point) address. No
// IFA_BROADCAST, as with `ip addr add` without `brd`.
AddrRequest AddressRequest(const IpAddress& addr, int prefix, unsigned ifindex, uint16_t type,
                           uint16_t flags) {
  AddrRequest req{};
  req.header.nlmsg_len = NLMSG_LENGTH(sizeof(ifaddrmsg));
  req.header.nlmsg_type = type;
  req.header.nlmsg_flags = flags;
  req.ifa.ifa_family = static_cast<uint8_t>(addr.family);
  req.ifa.ifa_prefixlen = static_cast<uint8_t>(prefix);
  req.ifa.ifa_scope = RT_SCOPE_UNIVERSE;
  req.ifa.ifa_index = ifindex;
  AddAttr(req, IFA_LOCAL, addr.bytes, addr.size());
  AddAttr(req, IFA_ADDRESS, addr.bytes, addr.size());
  return req;
}

void ChangeAddress(const Napi::CallbackInfo& info, bool add) {
  Napi::Env env = info.Env();
  std::string ifname = IfnameValue(env, info[0]);
  IpAddress addr = AddressValue(env, info[1], "address");
  const bool v6 = addr.family == AF_INET6;
  int prefix = static_cast<int>(IntArg(info, 2, "prefixLength", 0, v6 ? 128 : 32));
  unsigned ifindex = IfIndex(env, ifname);

  // EXCL: an address that is already there is reported (EEXIST) rather than silently kept,
  // so the caller knows whether it took the address over or already had it.
  AddrRequest req = AddressRequest(addr, prefix, ifindex, add ? RTM_NEWADDR : RTM_DELADDR,
                                   NLM_F_REQUEST | NLM_F_ACK | (add ? NLM_F_CREATE | NLM_F_EXCL : 0));
  if (add && v6) {
    // NODAD: the address moves here from a dead node and must be usable at once; duplicate
    // address detection would keep it tentative (unusable) for a second or more.
    uint32_t flags = IFA_F_NODAD;
    req.ifa.ifa_flags = IFA_F_NODAD;  // the 8-bit field, for kernels without IFA_FLAGS
    AddAttr(req, IFA_FLAGS, &flags, sizeof flags);
  }
  int err = Transact(env, req);
  if (err != 0) ThrowErrno(env, "rtnetlink", err);
}

// One entry of the address on the interface, as RTM_GETADDR reports it.
struct AddressEntry {
  uint8_t prefixLength = 0;
  uint32_t flags = 0;  // IFA_FLAGS when present (it carries the bits above 8), else ifa_flags
  uint8_t scope = 0;
  uint32_t preferred = kForever;  // seconds left, or kForever
  uint32_t valid = kForever;
};

// The entries for addr in one RTM_NEWADDR message of a dump, if it is about ifindex.
void CollectEntry(const nlmsghdr* h, const IpAddress& addr, unsigned ifindex,
                  std::vector<AddressEntry>& out) {
  if (h->nlmsg_type != RTM_NEWADDR || h->nlmsg_len < NLMSG_LENGTH(sizeof(ifaddrmsg))) return;
  const auto* ifa = static_cast<const ifaddrmsg*>(NLMSG_DATA(h));
  if (ifa->ifa_index != ifindex || ifa->ifa_family != addr.family) return;
  AddressEntry e;
  e.prefixLength = ifa->ifa_prefixlen;
  e.flags = ifa->ifa_flags;
  e.scope = ifa->ifa_scope;
  // IPv4 names its own address IFA_LOCAL (IFA_ADDRESS is the peer's on a point-to-point link);
  // IPv6 sends IFA_LOCAL only on such links, where it is the local one too.
  const void* local = nullptr;
  const void* address = nullptr;
  int len = static_cast<int>(IFA_PAYLOAD(h));
  for (auto* rta = IFA_RTA(ifa); RTA_OK(rta, len); rta = RTA_NEXT(rta, len)) {
    const size_t size = RTA_PAYLOAD(rta);
    if (rta->rta_type == IFA_LOCAL && size == addr.size()) local = RTA_DATA(rta);
    if (rta->rta_type == IFA_ADDRESS && size == addr.size()) address = RTA_DATA(rta);
    if (rta->rta_type == IFA_FLAGS && size >= sizeof(uint32_t)) {
      std::memcpy(&e.flags, RTA_DATA(rta), sizeof(uint32_t));
    }
    if (rta->rta_type == IFA_CACHEINFO && size >= sizeof(ifa_cacheinfo)) {
      ifa_cacheinfo ci;
      std::memcpy(&ci, RTA_DATA(rta), sizeof ci);
      e.preferred = ci.ifa_prefered;
      e.valid = ci.ifa_valid;
    }
  }
  const void* mine = local != nullptr ? local : address;
  if (mine != nullptr && std::memcmp(mine, addr.bytes, addr.size()) == 0) out.push_back(e);
}

// An RTM_GETADDR dump of one family. Like Transact, synchronous: the kernel fills the replies
// while we read them, and a host's address list is a few messages (sub-millisecond).
std::vector<AddressEntry> DumpEntries(Napi::Env env, const IpAddress& addr, unsigned ifindex) {
  UniqueFd fd = OpenRoute(env);
  // Strict checking lets the kernel filter the dump by interface (ignored where unsupported:
  // the entries are filtered here as well).
  int one = 1;
  setsockopt(fd.get(), SOL_NETLINK, NETLINK_GET_STRICT_CHK, &one, sizeof one);

  AddrRequest req{};
  req.header.nlmsg_len = NLMSG_LENGTH(sizeof(ifaddrmsg));
  req.header.nlmsg_type = RTM_GETADDR;
  req.header.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  const uint32_t seq = 1;
  req.header.nlmsg_seq = seq;
  req.ifa.ifa_family = static_cast<uint8_t>(addr.family);
  req.ifa.ifa_index = ifindex;
  SendToKernel(env, fd, req);

  std::vector<AddressEntry> entries;
  alignas(nlmsghdr) char buf[32768];
  for (;;) {
    int len = ReceiveSome(env, fd, buf, sizeof buf);
    for (auto* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
      if (h->nlmsg_seq != seq) continue;
      if (h->nlmsg_type == NLMSG_DONE) return entries;
      if (h->nlmsg_type == NLMSG_ERROR) {
        if (h->nlmsg_len < NLMSG_LENGTH(sizeof(nlmsgerr))) ThrowErrno(env, "rtnetlink", EPROTO);
        ThrowErrno(env, "rtnetlink", -static_cast<nlmsgerr*>(NLMSG_DATA(h))->error);
      }
      CollectEntry(h, addr, ifindex, entries);
    }
  }
}

// addressEntries(ifname, address): [{prefixLength, flags, scope, preferredLifetime,
// validLifetime}] for each entry of address on ifname ([] when it is not there; IPv4 may hold
// one address under several prefix lengths). Lifetimes in seconds, -1 for forever.
Napi::Value AddressEntries(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string ifname = IfnameValue(env, info[0]);
  IpAddress addr = AddressValue(env, info[1], "address");
  unsigned ifindex = IfIndex(env, ifname);
  std::vector<AddressEntry> entries = DumpEntries(env, addr, ifindex);
  Napi::Array out = Napi::Array::New(env, entries.size());
  auto lifetime = [&](uint32_t s) {
    return Napi::Number::New(env, s == kForever ? -1.0 : static_cast<double>(s));
  };
  for (size_t i = 0; i < entries.size(); i++) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("prefixLength", Napi::Number::New(env, entries[i].prefixLength));
    o.Set("flags", Napi::Number::New(env, entries[i].flags));
    o.Set("scope", Napi::Number::New(env, entries[i].scope));
    o.Set("preferredLifetime", lifetime(entries[i].preferred));
    o.Set("validLifetime", lifetime(entries[i].valid));
    out.Set(static_cast<uint32_t>(i), o);
  }
  return out;
}

// setAddressLifetime(ifname, address, prefixLength, lifetimeSeconds, flags): sets the valid and
// preferred lifetime of an address already on ifname (seconds, 1 to 2^32 - 2; -1: forever, a
// permanent address again). The kernel restarts the lifetime from now and removes the address
// when it runs out. `flags` (IFA_F_*) replaces the address's own for IPv6 (the caller passes
// the ones it has: NODAD, NOPREFIXROUTE...); IPv4 keeps its flags on a replace.
// NLM_F_REPLACE without NLM_F_CREATE, as `ip addr change` sends it; but the kernel adds an
// address that is not there whatever NLM_F_CREATE says (inet_rtm_newaddr, inet6_rtm_newaddr),
// so this is only for an address the caller has just seen there, with time left to live.
Napi::Value SetAddressLifetime(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string ifname = IfnameValue(env, info[0]);
  IpAddress addr = AddressValue(env, info[1], "address");
  const bool v6 = addr.family == AF_INET6;
  int prefix = static_cast<int>(IntArg(info, 2, "prefixLength", 0, v6 ? 128 : 32));
  int64_t seconds = IntArg(info, 3, "lifetimeSeconds", -1, kForever - 1);
  if (seconds == 0) ThrowInvalidArg(env, "lifetimeSeconds must be -1 (forever) or at least 1");
  uint32_t flags = static_cast<uint32_t>(IntArg(info, 4, "flags", 0, UINT32_MAX));
  unsigned ifindex = IfIndex(env, ifname);

  AddrRequest req =
      AddressRequest(addr, prefix, ifindex, RTM_NEWADDR, NLM_F_REQUEST | NLM_F_ACK | NLM_F_REPLACE);
  ifa_cacheinfo ci{};
  ci.ifa_valid = seconds < 0 ? kForever : static_cast<uint32_t>(seconds);
  ci.ifa_prefered = ci.ifa_valid;  // never deprecated before it goes: a lease holds or ends
  AddAttr(req, IFA_CACHEINFO, &ci, sizeof ci);
  if (v6) {
    req.ifa.ifa_flags = static_cast<uint8_t>(flags & 0xFF);  // for kernels without IFA_FLAGS
    AddAttr(req, IFA_FLAGS, &flags, sizeof flags);
  }
  int err = Transact(env, req);
  if (err != 0) ThrowErrno(env, "rtnetlink", err);
  return env.Undefined();
}

// routesLocally(ifname, address): true when the kernel's route to address, looked up as leaving
// through ifname (so a VRF's interface finds its own table), is local (RTN_LOCAL: a packet for
// it is delivered on this host); false for any other route or none. IPv6 lists an
// address added with NODAD at once but inserts its local route from the address workqueue
// (addrconf_dad_completed), a few ms later on a busy host: until then the packets sent to it,
// neighbour advertisements included, are routed as someone else's (and dropped).
// A route get is answered inside sendto, like Transact: synchronous, sub-millisecond.
Napi::Value RoutesLocally(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string ifname = IfnameValue(env, info[0]);
  IpAddress addr = AddressValue(env, info[1], "address");
  uint32_t ifindex = IfIndex(env, ifname);
  struct {
    nlmsghdr header;
    rtmsg rtm;
    alignas(NLMSG_ALIGNTO) char attrs[32];
  } req{};
  req.header.nlmsg_len = NLMSG_LENGTH(sizeof(rtmsg));
  req.header.nlmsg_type = RTM_GETROUTE;
  req.header.nlmsg_flags = NLM_F_REQUEST;
  const uint32_t seq = 1;
  req.header.nlmsg_seq = seq;
  req.rtm.rtm_family = static_cast<uint8_t>(addr.family);
  req.rtm.rtm_dst_len = static_cast<uint8_t>(addr.size() * 8);
  auto add = [&req](uint16_t type, const void* data, size_t size) {
    auto* rta = reinterpret_cast<rtattr*>(reinterpret_cast<char*>(&req) + NLMSG_ALIGN(req.header.nlmsg_len));
    rta->rta_type = type;
    rta->rta_len = static_cast<uint16_t>(RTA_LENGTH(size));
    std::memcpy(RTA_DATA(rta), data, size);
    req.header.nlmsg_len = NLMSG_ALIGN(req.header.nlmsg_len) + RTA_ALIGN(rta->rta_len);
  };
  add(RTA_DST, addr.bytes, addr.size());
  add(RTA_OIF, &ifindex, sizeof ifindex);

  UniqueFd fd = OpenRoute(env);
  SendToKernel(env, fd, req);
  alignas(nlmsghdr) char buf[8192];
  for (;;) {
    int len = ReceiveSome(env, fd, buf, sizeof buf);
    for (auto* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
      if (h->nlmsg_seq != seq) continue;
      if (h->nlmsg_type == NLMSG_ERROR) {
        if (h->nlmsg_len < NLMSG_LENGTH(sizeof(nlmsgerr))) ThrowErrno(env, "rtnetlink", EPROTO);
        int err = -static_cast<nlmsgerr*>(NLMSG_DATA(h))->error;
        // No route at all (unreachable): certainly not local.
        if (err == ENETUNREACH || err == EHOSTUNREACH) return Napi::Boolean::New(env, false);
        ThrowErrno(env, "rtnetlink", err);
      }
      if (h->nlmsg_type != RTM_NEWROUTE || h->nlmsg_len < NLMSG_LENGTH(sizeof(rtmsg))) continue;
      return Napi::Boolean::New(env, static_cast<rtmsg*>(NLMSG_DATA(h))->rtm_type == RTN_LOCAL);
    }
  }
}

Napi::Value AddAddress(const Napi::CallbackInfo& info) {
  ChangeAddress(info, true);
  return info.Env().Undefined();
}

Napi::Value RemoveAddress(const Napi::CallbackInfo& info) {
  ChangeAddress(info, false);
  return info.Env().Undefined();
}

}  // namespace

void InitNetlinkAddr(Napi::Env env, Napi::Object exports) {
  exports.Set("addAddress", Napi::Function::New<AddAddress>(env, "addAddress"));
  exports.Set("removeAddress", Napi::Function::New<RemoveAddress>(env, "removeAddress"));
  exports.Set("addressEntries", Napi::Function::New<AddressEntries>(env, "addressEntries"));
  exports.Set("routesLocally", Napi::Function::New<RoutesLocally>(env, "routesLocally"));
  exports.Set("setAddressLifetime",
              Napi::Function::New<SetAddressLifetime>(env, "setAddressLifetime"));
}

}  // namespace takeover
