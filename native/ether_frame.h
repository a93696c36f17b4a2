// Ethernet frames for the neighbour protocols (neigh_announce.cc, address_probe.cc): the MAC
// type, the Ethernet header, the interface's own MAC. Sent whole on packet sockets, so neither
// routing nor source address selection gets in the way.
#pragma once
#include <net/ethernet.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <sys/ioctl.h>

#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>

#include "errors.h"
#include "inet_checksum.h"

namespace takeover {

using Mac = std::array<uint8_t, ETH_ALEN>;

constexpr size_t kMinEthernetFrame = 60;  // without FCS; shorter frames are padded with zeros

inline size_t PutEthernet(uint8_t* p, const Mac& dst, const Mac& src, uint16_t ethertype) {
  std::memcpy(p, dst.data(), ETH_ALEN);
  std::memcpy(p + ETH_ALEN, src.data(), ETH_ALEN);
  PutBe16(p + 2 * ETH_ALEN, ethertype);
  return ETH_HLEN;
}

// The MAC of ifname (size < IFNAMSIZ, checked by the caller), read through any socket fd.
// ARP and NDP over Ethernet only: other link types (loopback, tunnels) have no neighbours to
// tell or ask, or a different frame format; they fail with EOPNOTSUPP, syscall `what`.
inline Mac InterfaceMac(Napi::Env env, int fd, const std::string& ifname, const char* what) {
  ifreq ifr{};
  std::memcpy(ifr.ifr_name, ifname.c_str(), ifname.size());
  if (ioctl(fd, SIOCGIFHWADDR, &ifr) != 0) ThrowErrno(env, "ioctl", errno);
  if (ifr.ifr_hwaddr.sa_family != ARPHRD_ETHER) ThrowErrno(env, what, EOPNOTSUPP);
  Mac mac;
  std::memcpy(mac.data(), ifr.ifr_hwaddr.sa_data, ETH_ALEN);
  return mac;
}

}  // namespace takeover
