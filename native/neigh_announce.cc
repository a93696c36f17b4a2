// announceAddress: tells every neighbour on a link that an address now lives at our MAC, so
// peers of a dead node send to its successor at once instead of to a stale neighbour entry.
// IPv4: gratuitous ARP request. IPv6: unsolicited Neighbour Advertisement with Override.
// Both go out as whole Ethernet frames on a packet socket, so neither routing nor source
// address selection (nor a still-tentative address) can get in the way.
#include <net/if_arp.h>
#include <net/ethernet.h>
#include <netpacket/packet.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <mutex>

#include <array>
#include <cerrno>
#include <cstring>
#include <string>

#include "address_arg.h"
#include "errors.h"
#include "ether_frame.h"
#include "inet_checksum.h"
#include "modules.h"
#include "unique_fd.h"

namespace takeover {
namespace {

constexpr Mac kAllNodesMac = {0x33, 0x33, 0x00, 0x00, 0x00, 0x01};  // for ff02::1 (RFC 2464)
constexpr uint8_t kAllNodes[16] = {0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};

// ARP request with sender IP = target IP = address: arp_process() treats it as gratuitous
// and overrides an existing neighbour entry with the sender MAC, without creating entries
// on hosts that never talked to the address. Target MAC is zero, as in any request.
NeighFrame GratuitousArp(const Mac& mac, const uint8_t address[4]) {
  return ArpRequest(mac, address, address);
}

// Unsolicited NA (RFC 4861 section 7.2.6): Override set, Solicited and Router clear, to all
// nodes, hop limit 255 (receivers drop any other), with our MAC as target link-layer address.
NeighFrame UnsolicitedNa(const Mac& mac, const uint8_t address[16]) {
  uint8_t icmp[24 + 8] = {136};  // Neighbour Advertisement + one 8-byte option
  icmp[4] = 0x20;                // R=0, S=0, O=1
  std::memcpy(icmp + 8, address, 16);  // target
  icmp[24] = 2;                  // option: target link-layer address
  icmp[25] = 1;                  // length in units of 8 bytes
  std::memcpy(icmp + 26, mac.data(), ETH_ALEN);
  return NdpFrame(mac, kAllNodesMac, address, kAllNodes, icmp, sizeof icmp);  // 86 bytes
}

// One packet socket for the life of the process. Closing a packet socket waits for an RCU
// grace period (synchronize_net, 8-16 ms measured here), and an address takeover announces
// several times at the moment that matters most. Protocol 0: the socket only sends; it is
// never bound to a protocol, so the kernel never queues received frames on it.
const UniqueFd& AnnounceSocket(Napi::Env env) {
  static std::mutex lock;
  static UniqueFd fd;
  std::lock_guard<std::mutex> guard(lock);
  if (!fd) {
    fd.reset(socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0));
    if (!fd) ThrowErrno(env, "socket", errno);
  }
  return fd;
}

Napi::Value AnnounceAddress(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string ifname = IfnameValue(env, info[0]);
  IpAddress addr = AddressValue(env, info[1], "address");
  unsigned ifindex = IfIndex(env, ifname);

  const UniqueFd& fd = AnnounceSocket(env);
  Mac mac = InterfaceMac(env, fd.get(), ifname, "announceAddress");
  NeighFrame frame = addr.family == AF_INET ? GratuitousArp(mac, addr.bytes)
                                       : UnsolicitedNa(mac, addr.bytes);

  sockaddr_ll to{};
  to.sll_family = AF_PACKET;
  to.sll_protocol = htons(frame.ethertype);
  to.sll_ifindex = static_cast<int>(ifindex);
  to.sll_halen = ETH_ALEN;
  std::memcpy(to.sll_addr, frame.dst.data(), ETH_ALEN);
  ssize_t n;
  do {  // one frame to the device queue: never blocks meaningfully
    n = sendto(fd.get(), frame.bytes.data(), frame.len, 0, reinterpret_cast<sockaddr*>(&to),
               sizeof to);
  } while (n < 0 && errno == EINTR);
  if (n < 0) ThrowErrno(env, "sendto", errno);
  return env.Undefined();
}

}  // namespace

void InitNeighAnnounce(Napi::Env env, Napi::Object exports) {
  exports.Set("announceAddress", Napi::Function::New<AnnounceAddress>(env, "announceAddress"));
}

}  // namespace takeover
