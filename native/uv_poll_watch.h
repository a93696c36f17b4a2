// An fd watched for readability (or writability) on the Node event loop (uv_poll), with the handle's lifetime
// handled once: libuv frees a poll handle only after uv_close's callback, which may run after
// the owner is gone, so the handle is heap-allocated and detached from its owner on Stop().
#pragma once
#include <uv.h>

#include <functional>
#include <utility>

namespace takeover {

class UvPollWatch {
 public:
  UvPollWatch() = default;
  UvPollWatch(const UvPollWatch&) = delete;
  UvPollWatch& operator=(const UvPollWatch&) = delete;
  ~UvPollWatch() { Stop(); }

  // Starts watching fd for `events` (UV_READABLE and/or UV_WRITABLE; 0: set up, not watching
  // yet, see SetEvents); onReady runs on the loop thread each time fd is ready, with status 0,
  // or with a negative libuv error when fd reported one (POLLERR): libuv has then stopped
  // watching, and Resume() (or SetEvents) starts again. Returns 0 or a negative libuv error.
  int Start(uv_loop_t* loop, int fd, std::function<void(int status)> onReady, int events = UV_READABLE) {
    if (handle_) return 0;
    auto* h = new uv_poll_t;
    int rc = uv_poll_init(loop, h, fd);
    if (rc != 0) {
      delete h;
      return rc;
    }
    onReady_ = std::move(onReady);
    h->data = this;
    handle_ = h;
    rc = SetEvents(events);
    if (rc != 0) Stop();
    return rc;
  }

  // Watches for `events` from now on (0: none, the handle kept); a no-op when they are watched
  // already. Callable from within the callback. Returns 0 or a negative libuv error.
  int SetEvents(int events) {
    if (!handle_) return 0;
    if (armed_ && events == events_) return 0;
    events_ = events;
    if (events == 0) {
      armed_ = false;
      return uv_poll_stop(handle_);
    }
    int rc = uv_poll_start(handle_, events, Ready);
    armed_ = rc == 0;
    return rc;
  }

  // Watches again, for the same events, after an error stopped it (callable from within the callback).
  int Resume() { return SetEvents(events_); }

  // Stops watching; safe to call more than once, and from within the callback.
  void Stop() {
    if (!handle_) return;
    uv_poll_stop(handle_);
    handle_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(handle_), Free);
    handle_ = nullptr;
    armed_ = false;
  }

  bool active() const { return handle_ != nullptr; }

 private:
  static void Free(uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); }
  static void Ready(uv_poll_t* p, int status, int) {
    auto* self = static_cast<UvPollWatch*>(p->data);
    if (!self) return;
    if (status < 0) self->armed_ = false;  // libuv stopped the handle
    self->onReady_(status);
  }

  uv_poll_t* handle_ = nullptr;
  int events_ = 0;
  bool armed_ = false;  // uv_poll_start is in effect for events_
  std::function<void(int)> onReady_;
};

}  // namespace takeover
