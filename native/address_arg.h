// Parsing of textual IP address arguments for forge.cc, netlink_addr.cc and neigh_announce.cc.
#pragma once
#include <arpa/inet.h>
#include <net/if.h>
#include <napi.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdint>
#include <string>

#include "errors.h"

namespace takeover {

// A parsed address: family AF_INET (4 bytes used) or AF_INET6 (16 bytes), network order.
struct IpAddress {
  int family = AF_UNSPEC;
  uint8_t bytes[16] = {};
  size_t size() const { return family == AF_INET6 ? 16 : 4; }
};

// v must be a string inet_pton accepts as IPv4 or IPv6 (no zone suffix); field names the
// argument in the error message.
inline IpAddress AddressValue(Napi::Env env, Napi::Value v, const std::string& field) {
  if (!v.IsString()) ThrowInvalidArg(env, field + " must be an IPv4 or IPv6 address string");
  std::string text = v.As<Napi::String>().Utf8Value();
  IpAddress a;
  if (inet_pton(AF_INET, text.c_str(), a.bytes) == 1) {
    a.family = AF_INET;
  } else if (inet_pton(AF_INET6, text.c_str(), a.bytes) == 1) {
    a.family = AF_INET6;
  } else {
    ThrowInvalidArg(env, field + " is not a valid IPv4 or IPv6 address: '" + text + "'");
  }
  return a;
}

// An interface name that fits IFNAMSIZ; whether it exists is left to if_nametoindex.
inline std::string IfnameValue(Napi::Env env, Napi::Value v, const std::string& field = "ifname") {
  if (!v.IsString()) ThrowInvalidArg(env, field + " must be a string");
  std::string name = v.As<Napi::String>().Utf8Value();
  if (name.empty() || name.size() >= IFNAMSIZ || name.find('\0') != std::string::npos) {
    ThrowInvalidArg(env, field + " must be 1 to " + std::to_string(IFNAMSIZ - 1) +
                             " characters: '" + name + "'");
  }
  return name;
}

// if_nametoindex, with an unknown interface reported as ENODEV (glibc may say ENXIO or ENODEV).
inline unsigned IfIndex(Napi::Env env, const std::string& name) {
  unsigned index = if_nametoindex(name.c_str());
  if (index == 0) {
    int err = errno;
    // Keep real failures (EMFILE, ...) but report every "no such interface" the same way.
    if (err == 0 || err == ENXIO || err == ENODEV) err = ENODEV;
    ThrowErrno(env, "if_nametoindex", err);
  }
  return index;
}

}  // namespace takeover
