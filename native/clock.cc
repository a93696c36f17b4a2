// The wall clock with sub-millisecond precision: CLOCK_REALTIME, the clock a capture ring stamps
// frames with. JS has Date.now() (whole ms) and performance.now() (monotonic: it drifts from the
// wall clock as NTP slews it), neither of which can be compared with a frame's timestamp to
// better than a millisecond; the replay matcher orders probes and captured requests with it.
#include <cerrno>
#include <ctime>

#include "errors.h"
#include "modules.h"

namespace takeover {
namespace {

// realtimeMs(): ms since the epoch, fractional (ns resolution). Throws (code, errno, syscall)
// if clock_gettime fails (it does not for CLOCK_REALTIME on Linux).
Napi::Value RealtimeMs(const Napi::CallbackInfo& info) {
  timespec ts{};
  if (clock_gettime(CLOCK_REALTIME, &ts) != 0) ThrowErrno(info.Env(), "clock_gettime", errno);
  return Napi::Number::New(info.Env(), static_cast<double>(ts.tv_sec) * 1000.0 + static_cast<double>(ts.tv_nsec) / 1e6);
}

}  // namespace

void InitClock(Napi::Env env, Napi::Object exports) {
  exports.Set("realtimeMs", Napi::Function::New(env, RealtimeMs, "realtimeMs"));
}

}  // namespace takeover
