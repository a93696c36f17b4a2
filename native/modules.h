// One Init function per native module; addon.cc calls each to fill the exports object.
#pragma once
#include <napi.h>

namespace takeover {
void InitCapture(Napi::Env env, Napi::Object exports);      // capture.cc + flow_table.cc
void InitParse(Napi::Env env, Napi::Object exports);        // tcp_parse.cc (exposed for tests/fuzz)
void InitForge(Napi::Env env, Napi::Object exports);        // forge.cc
void InitSockDiag(Napi::Env env, Napi::Object exports);     // sockdiag.cc
void InitPidfd(Napi::Env env, Napi::Object exports);        // pidfd.cc
void InitSocketOps(Napi::Env env, Napi::Object exports);    // socket_ops.cc
void InitNetlinkAddr(Napi::Env env, Napi::Object exports);  // netlink_addr.cc
void InitNeighAnnounce(Napi::Env env, Napi::Object exports);  // neigh_announce.cc
}  // namespace takeover
