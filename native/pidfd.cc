// Borrowing another process's file descriptor: pidfd_open + pidfd_getfd (Linux 5.6+). Needs
// PTRACE_MODE_ATTACH_REALCREDS over the target (root, or CAP_SYS_PTRACE). The copy refers to
// the same open socket, so what we do with it (send, shutdown) acts on the owner's connection,
// while closing our copy leaves the owner's fd untouched.
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

#include "arg_checks.h"
#include "errors.h"
#include "modules.h"
#include "unique_fd.h"

namespace takeover {
namespace {

// borrowFd(pid, fd): the number of a new fd in this process (close-on-exec, set by the
// kernel). The caller owns it and must closeFd it.
Napi::Value BorrowFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  pid_t pid = static_cast<pid_t>(IntArg(info, 0, "pid", 1, INT32_MAX));
  int target_fd = FdArg(info, 1);

  UniqueFd pidfd(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
  if (!pidfd) ThrowErrno(env, "pidfd_open", errno);
  // Only the pidfd is ours to close here; the borrowed fd goes to JS.
  int fd = static_cast<int>(syscall(SYS_pidfd_getfd, pidfd.get(), target_fd, 0));
  if (fd < 0) ThrowErrno(env, "pidfd_getfd", errno);
  return Napi::Number::New(env, fd);
}

}  // namespace

void InitPidfd(Napi::Env env, Napi::Object exports) {
  exports.Set("borrowFd", Napi::Function::New(env, BorrowFd, "borrowFd"));
}

}  // namespace takeover
