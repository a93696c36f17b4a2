// Ethernet frames for the neighbour protocols (neigh_announce.cc, address_probe.cc): the MAC
// type, the Ethernet header, the interface's own MAC. Sent whole on packet sockets, so neither
// routing nor source address selection gets in the way.
#pragma once
#include <net/ethernet.h>
#include <netinet/in.h>
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

constexpr Mac kBroadcastMac = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

// One whole Ethernet frame to send, with what sendto() needs besides its bytes.
struct NeighFrame {
  std::array<uint8_t, 128> bytes{};
  size_t len = 0;
  uint16_t ethertype = 0;
  Mac dst{};
};

// An ARP request (RFC 826) broadcast from `mac`: sender IP `sender_ip` (nullptr: 0.0.0.0, an
// RFC 5227 probe), target hardware address zero, target IP `target_ip`.
inline NeighFrame ArpRequest(const Mac& mac, const uint8_t* sender_ip, const uint8_t target_ip[4]) {
  NeighFrame f;
  f.ethertype = ETH_P_ARP;
  f.dst = kBroadcastMac;
  uint8_t* p = f.bytes.data();
  uint8_t* arp = p + PutEthernet(p, f.dst, mac, ETH_P_ARP);
  PutBe16(arp, ARPHRD_ETHER);
  PutBe16(arp + 2, ETH_P_IP);
  arp[4] = ETH_ALEN;
  arp[5] = 4;
  PutBe16(arp + 6, ARPOP_REQUEST);
  std::memcpy(arp + 8, mac.data(), ETH_ALEN);  // sender hardware address
  if (sender_ip != nullptr) std::memcpy(arp + 14, sender_ip, 4);
  // arp + 18: target hardware address, left zero
  std::memcpy(arp + 24, target_ip, 4);
  f.len = kMinEthernetFrame;  // 42 bytes of content, zero padded
  return f;
}

// A neighbour discovery message (RFC 4861): the ICMPv6 message `icmp` (its checksum field
// filled in here) in an IPv6 packet from `src_ip` to `dst_ip` with hop limit 255 (receivers
// drop any other, RFC 4861 7.1), on Ethernet from `mac` to `dst_mac`.
inline NeighFrame NdpFrame(const Mac& mac, const Mac& dst_mac, const uint8_t src_ip[16], const uint8_t dst_ip[16], const uint8_t* icmp, size_t icmp_len) {
  NeighFrame f;
  f.ethertype = ETH_P_IPV6;
  f.dst = dst_mac;
  uint8_t* p = f.bytes.data();
  uint8_t* ip = p + PutEthernet(p, f.dst, mac, ETH_P_IPV6);
  ip[0] = 0x60;
  PutBe16(ip + 4, static_cast<uint16_t>(icmp_len));
  ip[6] = IPPROTO_ICMPV6;
  ip[7] = 255;
  std::memcpy(ip + 8, src_ip, 16);
  std::memcpy(ip + 24, dst_ip, 16);
  uint8_t* m = ip + 40;
  std::memcpy(m, icmp, icmp_len);
  m[2] = m[3] = 0;
  InetChecksum sum;  // over the IPv6 pseudo-header (source, destination, length, next header), then the message
  sum.Add(ip + 8, 32);
  sum.Add32(static_cast<uint32_t>(icmp_len));
  sum.Add16(IPPROTO_ICMPV6);
  sum.Add(m, icmp_len);
  PutBe16(m + 2, sum.Finish());
  f.len = ETH_HLEN + 40 + icmp_len;  // above the Ethernet minimum for every ND message
  return f;
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
