// ProcessWatch: a process's exit, the instant it happens. pidfd_open(pid) gives an fd that
// becomes readable when the process exits (Linux 5.3+); it is watched with uv_poll, so the event
// loop is never blocked and no polling interval delays the news. Unlike a pid, a pidfd cannot
// be fooled by pid reuse: it refers to the process it was opened for.
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <memory>

#include "arg_checks.h"
#include "errors.h"
#include "modules.h"
#include "unique_fd.h"
#include "uv_poll_watch.h"

namespace takeover {
namespace {

class ProcessWatch : public Napi::ObjectWrap<ProcessWatch> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "ProcessWatch",
                       {InstanceMethod<&ProcessWatch::Start>("start"), InstanceMethod<&ProcessWatch::Close>("close")});
  }

  explicit ProcessWatch(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ProcessWatch>(info) {
    Napi::Env env = info.Env();
    pid_t pid = static_cast<pid_t>(IntArg(info, 0, "pid", 1, INT32_MAX));
    pidfd_.reset(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
    if (!pidfd_) ThrowErrno(env, "pidfd_open", errno);
  }

 private:
  // start(onExit): onExit(timeMs) runs once, when the process has exited.
  Napi::Value Start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!pidfd_) ThrowErrno(env, "uv_poll_start", EBADF);
    if (!info[0].IsFunction()) ThrowInvalidArg(env, "start(onExit) needs a function");
    if (poll_.active()) return env.Undefined();
    callback_ = Napi::Persistent(info[0].As<Napi::Function>());
    asyncContext_ = std::make_unique<Napi::AsyncContext>(env, "takeover:process-watch");
    uv_loop_t* loop = nullptr;
    napi_get_uv_event_loop(env, &loop);
    int rc = poll_.Start(loop, pidfd_.get(), [this](int) { OnExit(); });  // a pidfd's only news is the exit
    if (rc != 0) {
      callback_.Reset();
      asyncContext_.reset();
      ThrowErrno(env, "uv_poll_start", -rc);
    }
    Ref();  // alive while watching, like a timer
    return env.Undefined();
  }

  void OnExit() {
    using namespace std::chrono;
    const double timeMs = duration<double, std::milli>(system_clock::now().time_since_epoch()).count();
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    Napi::FunctionReference cb = std::move(callback_);
    auto ctx = std::move(asyncContext_);
    Stop();
    try {
      cb.MakeCallback(Value(), {Napi::Number::New(env, timeMs)}, *ctx);
    } catch (const Napi::Error& e) {
      napi_fatal_exception(env, e.Value());
    }
  }

  void Stop() {
    if (!poll_.active()) return;
    poll_.Stop();
    callback_.Reset();
    asyncContext_.reset();
    Unref();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    Stop();
    pidfd_.reset();
    return info.Env().Undefined();
  }

  UniqueFd pidfd_;
  UvPollWatch poll_;
  Napi::FunctionReference callback_;
  std::unique_ptr<Napi::AsyncContext> asyncContext_;
};

}  // namespace

void InitPidfdWatch(Napi::Env env, Napi::Object exports) { exports.Set("ProcessWatch", ProcessWatch::Define(env)); }

}  // namespace takeover
