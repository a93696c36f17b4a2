// Native failures become JS Errors shaped like Node's own system errors:
// message "ECODE: description, syscall", and properties code, errno, syscall.
#pragma once
#include <napi.h>
#include <string>

namespace takeover {

// Builds the error object without throwing it (for AsyncWorker / callbacks).
Napi::Error ErrnoError(Napi::Env env, const char* syscall, int err);

// Throws ErrnoError as a C++ exception (NAPI_CPP_EXCEPTIONS is on).
[[noreturn]] void ThrowErrno(Napi::Env env, const char* syscall, int err);

// For argument validation: a TypeError with code ERR_INVALID_ARG_VALUE.
[[noreturn]] void ThrowInvalidArg(Napi::Env env, const std::string& message);

}  // namespace takeover
