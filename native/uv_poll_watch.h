// An fd watched for readability on the Node event loop (uv_poll), with the handle's lifetime
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

  // Starts watching fd; onReady runs on the loop thread each time fd is readable, with status
  // 0, or with a negative libuv error when fd reported one (POLLERR): libuv has then stopped
  // watching, and Resume() starts again. Returns 0 or a negative libuv error.
  int Start(uv_loop_t* loop, int fd, std::function<void(int status)> onReady) {
    if (handle_) return 0;
    auto* h = new uv_poll_t;
    int rc = uv_poll_init(loop, h, fd);
    if (rc != 0) {
      delete h;
      return rc;
    }
    onReady_ = std::move(onReady);
    h->data = this;
    rc = uv_poll_start(h, UV_READABLE, Ready);
    if (rc != 0) {
      uv_close(reinterpret_cast<uv_handle_t*>(h), Free);
      return rc;
    }
    handle_ = h;
    return 0;
  }

  // Watches again after an error stopped it (callable from within the callback).
  int Resume() { return handle_ ? uv_poll_start(handle_, UV_READABLE, Ready) : 0; }

  // Stops watching; safe to call more than once, and from within the callback.
  void Stop() {
    if (!handle_) return;
    uv_poll_stop(handle_);
    handle_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(handle_), Free);
    handle_ = nullptr;
  }

  bool active() const { return handle_ != nullptr; }

 private:
  static void Free(uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); }
  static void Ready(uv_poll_t* p, int status, int) {
    if (auto* self = static_cast<UvPollWatch*>(p->data)) self->onReady_(status);
  }

  uv_poll_t* handle_ = nullptr;
  std::function<void(int)> onReady_;
};

}  // namespace takeover
