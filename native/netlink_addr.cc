// addAddress / removeAddress: RTM_NEWADDR and RTM_DELADDR over rtnetlink, the same requests
// `ip addr add|del` makes, without spawning ip(8) at the moment a node takes over an address.
#include <linux/if_addr.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "address_arg.h"
#include "arg_checks.h"
#include "errors.h"
#include "modules.h"
#include "unique_fd.h"

namespace takeover {
namespace {

// Room for the header, ifaddrmsg and three attributes (two 16-byte addresses, one u32).
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

// Sends req and waits for its ACK; returns 0 or the positive errno the kernel reported.
// rtnetlink handles the request inside sendto, so the ACK is queued by the time recv runs:
// doing this synchronously does not stall the event loop. The receive timeout only guards
// against the impossible.
int Transact(Napi::Env env, AddrRequest& req) {
  UniqueFd fd(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
  if (!fd) ThrowErrno(env, "socket", errno);
  timeval timeout{5, 0};
  setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);

  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;  // nl_pid 0: the kernel
  const uint32_t seq = 1;  // a fresh socket per request, so any constant identifies our ACK
  req.header.nlmsg_seq = seq;
  ssize_t n;
  do {
    n = sendto(fd.get(), &req, req.header.nlmsg_len, 0, reinterpret_cast<sockaddr*>(&kernel),
               sizeof kernel);
  } while (n < 0 && errno == EINTR);
  if (n < 0) ThrowErrno(env, "sendto", errno);

  alignas(nlmsghdr) char buf[8192];
  for (;;) {
    do {
      n = recv(fd.get(), buf, sizeof buf, 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0) ThrowErrno(env, "recv", errno);
    int len = static_cast<int>(n);
    for (auto* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
      if (h->nlmsg_seq != seq || h->nlmsg_type != NLMSG_ERROR) continue;
      if (h->nlmsg_len < NLMSG_LENGTH(sizeof(nlmsgerr))) ThrowErrno(env, "rtnetlink", EPROTO);
      return -static_cast<nlmsgerr*>(NLMSG_DATA(h))->error;
    }
  }
}

void ChangeAddress(const Napi::CallbackInfo& info, bool add) {
  Napi::Env env = info.Env();
  std::string ifname = IfnameValue(env, info[0]);
  IpAddress addr = AddressValue(env, info[1], "address");
  const bool v6 = addr.family == AF_INET6;
  int prefix = static_cast<int>(IntArg(info, 2, "prefixLength", 0, v6 ? 128 : 32));
  unsigned ifindex = IfIndex(env, ifname);

  AddrRequest req{};
  req.header.nlmsg_len = NLMSG_LENGTH(sizeof(ifaddrmsg));
  req.header.nlmsg_type = add ? RTM_NEWADDR : RTM_DELADDR;
  // EXCL: an address that is already there is reported (EEXIST) rather than silently kept,
  // so the caller knows whether it took the address over or already had it.
  req.header.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | (add ? NLM_F_CREATE | NLM_F_EXCL : 0);
  req.ifa.ifa_family = static_cast<uint8_t>(addr.family);
  req.ifa.ifa_prefixlen = static_cast<uint8_t>(prefix);
  req.ifa.ifa_scope = RT_SCOPE_UNIVERSE;
  req.ifa.ifa_index = ifindex;
  // Local and prefix address are the same: a plain (not point-to-point) address, as ip(8)
  // sends it. No IFA_BROADCAST, as with `ip addr add` without `brd`.
  AddAttr(req, IFA_LOCAL, addr.bytes, addr.size());
  AddAttr(req, IFA_ADDRESS, addr.bytes, addr.size());
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
}

}  // namespace takeover
