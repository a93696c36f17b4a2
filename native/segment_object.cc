// See segment_object.h.
#include "segment_object.h"

#include <arpa/inet.h>
#include <sys/socket.h>

namespace takeover {

std::string AddressText(int family, const uint8_t* addr) {
  char buf[INET6_ADDRSTRLEN];
  inet_ntop(family == 4 ? AF_INET : AF_INET6, addr, buf, sizeof buf);
  return buf;
}

Napi::Object SegmentObject(Napi::Env env, const TcpSegment& s, double timeMs, uint32_t payloadBytes) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("family", s.family);
  o.Set("src", AddressText(s.family, s.src));
  o.Set("dst", AddressText(s.family, s.dst));
  o.Set("sport", s.sport);
  o.Set("dport", s.dport);
  o.Set("seq", Napi::Number::New(env, s.seq));
  o.Set("ack", Napi::Number::New(env, s.ack));
  o.Set("flags", s.flags);
  o.Set("window", s.window);
  o.Set("urgentPointer", s.urgentPointer);
  o.Set("payloadLength", Napi::Number::New(env, s.payloadLength));
  if (s.mss) o.Set("mss", s.mss);
  if (s.wscale >= 0) o.Set("wscale", s.wscale);
  if (s.sackPermitted) o.Set("sackPermitted", true);
  if (s.hasTimestamp) {
    o.Set("tsval", Napi::Number::New(env, s.tsval));
    o.Set("tsecr", Napi::Number::New(env, s.tsecr));
  }
  if (payloadBytes > 0 && s.payloadCaptured > 0) {
    uint32_t n = s.payloadCaptured < payloadBytes ? s.payloadCaptured : payloadBytes;
    o.Set("payload", Napi::Buffer<uint8_t>::Copy(env, s.payload, n));
  }
  if (timeMs > 0) o.Set("timeMs", timeMs);
  return o;
}

}  // namespace takeover
