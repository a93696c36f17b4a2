// Spawned: a short-lived command (a health probe) started without copying this process.
// libuv's uv_spawn (Node 20: libuv 1.46) forks, and fork() copies the page tables of the whole
// agent (its heap, its capture rings) on the event loop's thread: 12-38 ms per probe measured in
// the lab's agent during a 10,000-connection burst, every probe interval, on the loop that
// sends the heartbeats. posix_spawnp(3) uses clone(CLONE_VM | CLONE_VFORK) in glibc: nothing is
// copied, and the calling thread waits only until the child has exec'd.
// The child: stdin, stdout and stderr on /dev/null, its own process group (a timeout kills the
// group: what the probe started too), every signal's disposition back to default and an empty
// signal mask (Node ignores SIGPIPE; a probe must not inherit that). The exit is watched with a
// pidfd under uv_poll and reaped with waitid(P_PIDFD): libuv reaps only the children it spawned.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <string>
#include <vector>

#include "errors.h"
#include "modules.h"
#include "unique_fd.h"
#include "uv_poll_watch.h"

extern char** environ;

#ifndef P_PIDFD
#define P_PIDFD 3  // <linux/wait.h>; glibc's <sys/wait.h> has it from 2.36
#endif

namespace takeover {
namespace {

// posix_spawn's attribute and file-action objects, destroyed on every path.
struct SpawnSetup {
  posix_spawnattr_t attr;
  posix_spawn_file_actions_t actions;
  SpawnSetup() {
    posix_spawnattr_init(&attr);
    posix_spawn_file_actions_init(&actions);
  }
  ~SpawnSetup() {
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&actions);
  }
  SpawnSetup(const SpawnSetup&) = delete;
  SpawnSetup& operator=(const SpawnSetup&) = delete;
};

class Spawned : public Napi::ObjectWrap<Spawned> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Spawned",
                       {InstanceMethod<&Spawned::Start>("start"), InstanceMethod<&Spawned::KillGroup>("killGroup"),
                        InstanceAccessor<&Spawned::Pid>("pid")});
  }

  // new Spawned(file, args): file looked up in PATH as execvp does, args without argv[0] (file
  // is argv[0]). Throws ErrnoError (syscall posix_spawnp: ENOENT, EACCES, ... of the exec).
  explicit Spawned(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Spawned>(info) {
    Napi::Env env = info.Env();
    if (!info[0].IsString()) ThrowInvalidArg(env, "file must be a string");
    if (!info[1].IsArray()) ThrowInvalidArg(env, "args must be an array of strings");
    const std::string file = info[0].As<Napi::String>().Utf8Value();
    if (file.empty() || file.find('\0') != std::string::npos) ThrowInvalidArg(env, "file must be a non-empty string without NUL");
    std::vector<std::string> args{file};
    Napi::Array arr = info[1].As<Napi::Array>();
    for (uint32_t i = 0; i < arr.Length(); i++) {
      Napi::Value v = arr.Get(i);
      if (!v.IsString()) ThrowInvalidArg(env, "args must be an array of strings");
      args.push_back(v.As<Napi::String>().Utf8Value());
      if (args.back().find('\0') != std::string::npos) ThrowInvalidArg(env, "args must not contain NUL");
    }
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);

    SpawnSetup s;
    sigset_t all, none;
    sigfillset(&all);
    sigemptyset(&none);
    posix_spawnattr_setsigdefault(&s.attr, &all);
    posix_spawnattr_setsigmask(&s.attr, &none);
    posix_spawnattr_setpgroup(&s.attr, 0);
    posix_spawnattr_setflags(&s.attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETPGROUP);
    posix_spawn_file_actions_addopen(&s.actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&s.actions, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&s.actions, 2, "/dev/null", O_WRONLY, 0);
    // Every other fd of the agent is O_CLOEXEC (libuv and the addon open them so).
    if (int rc = posix_spawnp(&pid_, file.c_str(), &s.actions, &s.attr, argv.data(), environ); rc != 0) {
      ThrowErrno(env, "posix_spawnp", rc);
    }
    pidfd_.reset(static_cast<int>(syscall(SYS_pidfd_open, pid_, 0)));
    if (!pidfd_) {
      // Nothing to watch it with (a kernel before 5.3): it must not run unwatched, nor stay a zombie.
      const int err = errno;
      kill(-pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
      ThrowErrno(env, "pidfd_open", err);
    }
  }

 private:
  Napi::Value Pid(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), pid_); }

  // start(onExit): onExit(code, signal) once the child has exited and been reaped: code its exit
  // status (signal null), or signal the number that killed it (code null).
  Napi::Value Start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsFunction()) ThrowInvalidArg(env, "start(onExit) needs a function");
    if (reaped_ || poll_.active()) ThrowInvalidArg(env, "start() was called already");
    callback_ = Napi::Persistent(info[0].As<Napi::Function>());
    asyncContext_ = std::make_unique<Napi::AsyncContext>(env, "takeover:spawned");
    uv_loop_t* loop = nullptr;
    napi_get_uv_event_loop(env, &loop);
    if (int rc = poll_.Start(loop, pidfd_.get(), [this](int) { OnExit(); }); rc != 0) {
      callback_.Reset();
      asyncContext_.reset();
      ThrowErrno(env, "uv_poll_start", -rc);
    }
    Ref();  // alive until the exit is reported
    return env.Undefined();
  }

  void OnExit() {
    siginfo_t si{};
    // P_PIDFD (Linux 5.4): reaps exactly this child. WNOHANG: readable means exited, but never block the loop.
    if (syscall(SYS_waitid, P_PIDFD, pidfd_.get(), &si, WEXITED | WNOHANG, nullptr) != 0 || si.si_pid == 0) return;
    reaped_ = true;
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    Napi::FunctionReference cb = std::move(callback_);
    auto ctx = std::move(asyncContext_);
    poll_.Stop();
    pidfd_.reset();
    Unref();
    const bool exited = si.si_code == CLD_EXITED;
    Napi::Value code = exited ? Napi::Number::New(env, si.si_status) : env.Null();
    Napi::Value sig = exited ? env.Null() : Napi::Number::New(env, si.si_status);
    try {
      cb.MakeCallback(Value(), {code, sig}, *ctx);
    } catch (const Napi::Error& e) {
      napi_fatal_exception(env, e.Value());
    }
  }

  // killGroup(signal): the signal to the child's process group (the child and what it started),
  // until the child is reaped (after that its pid, and so its group id, may be another's).
  // Returns false once reaped or when the group is gone; throws ErrnoError on another failure.
  Napi::Value KillGroup(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsNumber()) ThrowInvalidArg(env, "killGroup(signal) needs a signal number");
    const int sig = info[0].As<Napi::Number>().Int32Value();
    if (sig < 1 || sig >= NSIG) ThrowInvalidArg(env, "signal out of range");
    if (reaped_) return Napi::Boolean::New(env, false);
    if (kill(-pid_, sig) != 0) {
      if (errno == ESRCH) return Napi::Boolean::New(env, false);
      ThrowErrno(env, "kill", errno);
    }
    return Napi::Boolean::New(env, true);
  }

  pid_t pid_ = -1;
  bool reaped_ = false;
  UniqueFd pidfd_;
  UvPollWatch poll_;
  Napi::FunctionReference callback_;
  std::unique_ptr<Napi::AsyncContext> asyncContext_;
};

}  // namespace

void InitSpawn(Napi::Env env, Napi::Object exports) { exports.Set("Spawned", Spawned::Define(env)); }

}  // namespace takeover
