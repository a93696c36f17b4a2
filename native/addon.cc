#include <napi.h>

#include "modules.h"

namespace {
Napi::Object Init(Napi::Env env, Napi::Object exports) {
  takeover::InitParse(env, exports);
  takeover::InitCapture(env, exports);
  takeover::InitForge(env, exports);
  takeover::InitSockDiag(env, exports);
  takeover::InitProcFds(env, exports);
  takeover::InitPidfd(env, exports);
  takeover::InitPidfdWatch(env, exports);
  takeover::InitSocketOps(env, exports);
  takeover::InitNetlinkAddr(env, exports);
  takeover::InitNeighAnnounce(env, exports);
  takeover::InitAddressProbe(env, exports);
  takeover::InitSgIo(env, exports);
  takeover::InitTcpRepair(env, exports);
  takeover::InitFileLock(env, exports);
  takeover::InitSpliceRelay(env, exports);
  takeover::InitClock(env, exports);
  takeover::InitNfQueue(env, exports);
  takeover::InitSpawn(env, exports);
  return exports;
}
}  // namespace

NODE_API_MODULE(takeover, Init)
