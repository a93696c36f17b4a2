// One Init function per native module; addon.cc calls each to fill the exports object.
#pragma once
#include <napi.h>

namespace takeover {
void InitCapture(Napi::Env env, Napi::Object exports);      // packet_capture.cc (+ tcp_flows.cc)
void InitParse(Napi::Env env, Napi::Object exports);        // packet_capture.cc (packet_parse.cc, for tests/fuzz)
void InitForge(Napi::Env env, Napi::Object exports);        // forge.cc
void InitSockDiag(Napi::Env env, Napi::Object exports);     // sockdiag.cc
void InitProcFds(Napi::Env env, Napi::Object exports);      // proc_fds.cc
void InitPidfd(Napi::Env env, Napi::Object exports);        // pidfd.cc
void InitPidfdWatch(Napi::Env env, Napi::Object exports);   // pidfd_watch.cc
void InitSocketOps(Napi::Env env, Napi::Object exports);    // socket_ops.cc
void InitNetlinkAddr(Napi::Env env, Napi::Object exports);  // netlink_addr.cc
void InitNeighAnnounce(Napi::Env env, Napi::Object exports);  // neigh_announce.cc
void InitAddressProbe(Napi::Env env, Napi::Object exports);   // address_probe.cc
void InitSgIo(Napi::Env env, Napi::Object exports);         // sg_io.cc
void InitTcpRepair(Napi::Env env, Napi::Object exports);    // tcp_repair.cc
void InitFileLock(Napi::Env env, Napi::Object exports);     // file_lock.cc
void InitSpliceRelay(Napi::Env env, Napi::Object exports);  // splice_relay.cc
void InitClock(Napi::Env env, Napi::Object exports);        // clock.cc
void InitNfQueue(Napi::Env env, Napi::Object exports);      // nf_queue.cc
void InitSpawn(Napi::Env env, Napi::Object exports);        // spawn.cc
}  // namespace takeover
