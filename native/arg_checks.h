// Argument checks shared by sockdiag.cc, pidfd.cc and socket_ops.cc. A JS number that is
// not an exact integer in range must never reach a syscall: 3.5 or -1 as an fd would
// silently act on some other descriptor.
#pragma once
#include <napi.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "errors.h"

namespace takeover {

// v as an integer in [min, max]; throws ERR_INVALID_ARG_VALUE otherwise.
inline int64_t IntValue(Napi::Env env, Napi::Value v, const char* name, int64_t min, int64_t max) {
  if (!v.IsNumber()) ThrowInvalidArg(env, std::string(name) + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || std::trunc(d) != d || d < static_cast<double>(min) ||
      d > static_cast<double>(max)) {
    ThrowInvalidArg(env, std::string(name) + " must be an integer in [" + std::to_string(min) +
                             ", " + std::to_string(max) + "]");
  }
  return static_cast<int64_t>(d);
}

inline int64_t IntArg(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t min,
                      int64_t max) {
  return IntValue(info.Env(), info[i], name, min, max);
}

// A file descriptor number: a non-negative int.
inline int FdArg(const Napi::CallbackInfo& info, size_t i, const char* name = "fd") {
  return static_cast<int>(IntArg(info, i, name, 0, INT32_MAX));
}

}  // namespace takeover
