#include "errors.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace takeover {

Napi::Error ErrnoError(Napi::Env env, const char* syscall, int err) {
  const char* name = strerrorname_np(err);
  char unknown[32];
  if (!name) {
    std::snprintf(unknown, sizeof unknown, "E%d", err);  // an errno glibc has no name for
    name = unknown;
  }
  std::string code = name;
  std::string message = code + ": " + std::strerror(err) + ", " + syscall;
  Napi::Error e = Napi::Error::New(env, message);
  Napi::Object o = e.Value();
  o.Set("code", code);
  // Node reports errno as a negative number (libuv convention); keep that convention.
  o.Set("errno", Napi::Number::New(env, -err));
  o.Set("syscall", syscall);
  return e;
}

void ThrowErrno(Napi::Env env, const char* syscall, int err) { throw ErrnoError(env, syscall, err); }

void ThrowInvalidArg(Napi::Env env, const std::string& message) {
  Napi::TypeError e = Napi::TypeError::New(env, message);
  e.Value().Set("code", "ERR_INVALID_ARG_VALUE");
  throw e;
}

}  // namespace takeover
