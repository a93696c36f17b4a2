// flock(2) on a file JS holds open (a FileHandle's fd): the mirrored log's directory lock. The
// kernel drops the lock when the last fd of that open file description closes, and so when the
// process dies however it dies: a killed writer never leaves a stale lock behind, which a lock
// file alone (created, then removed on a clean exit) would.
#include <sys/file.h>

#include <cerrno>

#include "arg_checks.h"
#include "errors.h"
#include "modules.h"

namespace takeover {
namespace {

// tryLockExclusive(fd): true when this open file now holds the exclusive lock, false when
// another holds it (EWOULDBLOCK). Never waits: LOCK_NB, so the event loop cannot hang on a
// holder that never lets go. Other failures (EBADF...) throw.
Napi::Value TryLockExclusive(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  for (;;) {
    if (flock(fd, LOCK_EX | LOCK_NB) == 0) return Napi::Boolean::New(env, true);
    if (errno == EWOULDBLOCK) return Napi::Boolean::New(env, false);
    if (errno != EINTR) ThrowErrno(env, "flock", errno);
  }
}

}  // namespace

void InitFileLock(Napi::Env env, Napi::Object exports) {
  exports.Set("tryLockExclusive", Napi::Function::New(env, TryLockExclusive, "tryLockExclusive"));
}

}  // namespace takeover
