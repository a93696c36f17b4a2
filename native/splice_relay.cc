// SpliceRelay: joins two connected TCP sockets both ways in the kernel (issue 12: a continued
// connection's throughput). Each direction moves bytes socket -> pipe -> socket with splice(2)
// (SPLICE_F_MOVE | SPLICE_F_NONBLOCK): the payload pages are handed over, never copied into
// userspace, and no JS runs per chunk. The sockets are watched with one uv_poll each (libuv allows
// one poll handle per fd), so the event loop never blocks; each callback moves at most kBudget
// bytes per direction, then yields (epoll is level-triggered: a socket still ready fires again).
//
// Pipes come from a per-thread pool and are held only while bytes are in them (PipePool).
//
// Ownership: the constructor dup()s both fds (F_DUPFD_CLOEXEC); the caller closes its own (the
// relay destroys its net.Sockets at once, in the same JS tick, so no fd is ever watched by a Node
// stream and this poll at the same time). Every fd and pipe end is a UniqueFd: an early return or
// a thrown exception closes them.
//
// Half-close: EOF read on one side -> shutdown(SHUT_WR) on the other once everything before it
// is written; the relay ends when both directions are done, or at the first error, and closes
// everything before the JS callback runs.
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <cerrno>
#include <cstdint>
#include <memory>
#include <vector>

#include "arg_checks.h"
#include "errors.h"
#include "modules.h"
#include "unique_fd.h"
#include "uv_poll_watch.h"

namespace takeover {
namespace {

// Bytes one direction may move per poll callback before yielding to the rest of the loop.
constexpr size_t kBudget = 4u << 20;
constexpr int kDefaultPipeBytes = 256 << 10;

// A pipe: the kernel buffer spliced bytes pass through (pages handed over, not copied).
struct Pipe {
  UniqueFd r;
  UniqueFd w;
  size_t bytes = 0;  // its capacity
};

// Empty pipes, shared by the relays of this thread (the loop's). A relay holds a pipe only while
// bytes are in it: an idle relay (most continued connections) holds none. Pipe capacity counts
// against the user's fs.pipe-user-pages-soft (64 MiB by default) whether used or not, and past
// it every new pipe of that user (root: every root process) gets 2 pages; a pipe per direction
// per relay would reach it at a few hundred relays.
class PipePool {
 public:
  // An empty pipe of about `bytes` (the kernel may refuse the size: then its default); false
  // with errno set when none can be made.
  bool Take(Pipe& out, int bytes) {
    if (!free_.empty()) {
      out = std::move(free_.back());
      free_.pop_back();
      return true;
    }
    int p[2];
    if (pipe2(p, O_NONBLOCK | O_CLOEXEC) != 0) return false;
    out.r.reset(p[0]);
    out.w.reset(p[1]);
    int size = fcntl(out.w.get(), F_SETPIPE_SZ, bytes);
    if (size < 0) size = fcntl(out.w.get(), F_GETPIPE_SZ);
    out.bytes = size > 0 ? static_cast<size_t>(size) : 65536;
    return true;
  }
  // Back to the pool; only ever an empty pipe. Beyond kMaxFree it is closed.
  void Give(Pipe& p) {
    if (!p.r) return;
    if (free_.size() < kMaxFree) free_.push_back(std::move(p));
    p = Pipe();
  }
  size_t free() const { return free_.size(); }

 private:
  static constexpr size_t kMaxFree = 16;
  std::vector<Pipe> free_;
};

thread_local PipePool pipePool;

// One way: src socket -> pipe -> dst socket, after the bytes JS had already read (leftover).
struct Direction {
  int src = -1;
  int dst = -1;
  int srcSide = 0;  // 0: socket a, 1: socket b (for the error's side)
  int dstSide = 1;
  Pipe pipe;  // held only while bytes are in it (inPipe > 0)
  int pipeBytes = 0;
  size_t inPipe = 0;
  std::vector<uint8_t> leftover;
  size_t leftoverAt = 0;
  bool srcEof = false;
  bool done = false;  // EOF relayed: dst shut down for writing
  bool wantRead = false;
  bool wantWrite = false;
  uint64_t bytes = 0;  // written to dst
};

struct Failure {
  int err = 0;
  const char* syscall = "";
  int side = 0;
};

bool Again(int e) { return e == EAGAIN || e == EWOULDBLOCK; }

// Moves what it can without blocking (kBudget bytes at most) and records what it waits for.
// Returns false with `f` set on an error.
bool Pump(Direction& d, Failure& f) {
  d.wantRead = d.wantWrite = false;
  if (d.done) return true;
  size_t moved = 0;
  // Bounded by the budget; every pass moves bytes or returns (an EINTR retry moves none, but
  // a signal cannot interrupt a non-blocking call endlessly).
  for (int passes = 0; passes < 4096; passes++) {
    if (moved >= kBudget) {
      if (d.inPipe > 0 || d.leftoverAt < d.leftover.size()) d.wantWrite = true;
      else d.wantRead = true;
      return true;
    }
    if (d.leftoverAt < d.leftover.size()) {
      ssize_t n = send(d.dst, d.leftover.data() + d.leftoverAt, d.leftover.size() - d.leftoverAt, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (Again(errno)) return d.wantWrite = true;
        f = {errno, "send", d.dstSide};
        return false;
      }
      d.leftoverAt += static_cast<size_t>(n);
      d.bytes += static_cast<uint64_t>(n);
      moved += static_cast<size_t>(n);
      if (d.leftoverAt == d.leftover.size()) std::vector<uint8_t>().swap(d.leftover), d.leftoverAt = 0;
      continue;
    }
    if (d.inPipe > 0) {
      ssize_t n = splice(d.pipe.r.get(), nullptr, d.dst, nullptr, d.inPipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (Again(errno)) return d.wantWrite = true;
        f = {errno, "splice", d.dstSide};
        return false;
      }
      d.inPipe -= static_cast<size_t>(n);
      d.bytes += static_cast<uint64_t>(n);
      moved += static_cast<size_t>(n);
      if (d.inPipe == 0) pipePool.Give(d.pipe);
      continue;
    }
    if (d.srcEof) {
      if (shutdown(d.dst, SHUT_WR) != 0 && errno != ENOTCONN) {
        f = {errno, "shutdown", d.dstSide};
        return false;
      }
      d.done = true;
      return true;
    }
    // The pipe is empty here, so EAGAIN can only mean the socket has nothing to read.
    if (!d.pipe.r && !pipePool.Take(d.pipe, d.pipeBytes)) {
      f = {errno, "pipe2", d.srcSide};
      return false;
    }
    ssize_t n = splice(d.src, nullptr, d.pipe.w.get(), nullptr, d.pipe.bytes, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n <= 0) {
      int err = errno;
      pipePool.Give(d.pipe);  // still empty
      if (n == 0) {
        d.srcEof = true;
        continue;
      }
      if (err == EINTR) continue;
      if (Again(err)) return d.wantRead = true;
      f = {err, "splice", d.srcSide};
      return false;
    }
    d.inPipe += static_cast<size_t>(n);
  }
  d.wantWrite = d.inPipe > 0 || d.leftoverAt < d.leftover.size();
  d.wantRead = !d.wantWrite;
  return true;
}

UniqueFd DupSocket(Napi::Env env, int fd) {
  int type = 0;
  socklen_t len = sizeof type;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0) ThrowErrno(env, "getsockopt", errno);
  if (type != SOCK_STREAM) ThrowInvalidArg(env, "SpliceRelay needs stream sockets");
  UniqueFd dup(fcntl(fd, F_DUPFD_CLOEXEC, 0));
  if (!dup) ThrowErrno(env, "fcntl", errno);
  // Shared with the caller's fd (one open file description): libuv has set it already.
  int flags = fcntl(dup.get(), F_GETFL);
  if (flags < 0 || fcntl(dup.get(), F_SETFL, flags | O_NONBLOCK) != 0) ThrowErrno(env, "fcntl", errno);
  return dup;
}

class SpliceRelay : public Napi::ObjectWrap<SpliceRelay> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "SpliceRelay",
                       {InstanceMethod<&SpliceRelay::Start>("start"), InstanceMethod<&SpliceRelay::Bytes>("bytes"),
                        InstanceMethod<&SpliceRelay::Close>("close"), InstanceMethod<&SpliceRelay::Detach>("detach")});
  }

  // new SpliceRelay(fdA, fdB, pipeBytes?): duplicates both fds; pipes come from the pool.
  explicit SpliceRelay(const Napi::CallbackInfo& info) : Napi::ObjectWrap<SpliceRelay>(info) {
    Napi::Env env = info.Env();
    int fdA = FdArg(info, 0, "fdA");
    int fdB = FdArg(info, 1, "fdB");
    if (fdA == fdB) ThrowInvalidArg(env, "SpliceRelay needs two different sockets");
    int pipeBytes = info[2].IsUndefined() ? kDefaultPipeBytes : static_cast<int>(IntArg(info, 2, "pipeBytes", 4096, 1 << 30));
    UniqueFd a = DupSocket(env, fdA);
    UniqueFd b = DupSocket(env, fdB);
    ab_.pipeBytes = ba_.pipeBytes = pipeBytes;
    a_ = std::move(a);
    b_ = std::move(b);
    ab_.src = ba_.dst = a_.get();
    ab_.dst = ba_.src = b_.get();
    ab_.srcSide = ba_.dstSide = 0;
    ab_.dstSide = ba_.srcSide = 1;
  }

 private:
  // start({aToB?, bToA?, aEof?, bEof?}, onEnd): the leftovers go first, in order; aEof/bEof: that
  // socket's EOF was already read. onEnd(error | null, {aToB, bToA, side?, firstEof?}) runs once.
  Napi::Value Start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (started_ || !a_) ThrowInvalidArg(env, "SpliceRelay.start: already started or closed");
    if (!info[0].IsObject() || !info[1].IsFunction()) ThrowInvalidArg(env, "start(init, onEnd) needs an object and a function");
    Napi::Object init = info[0].As<Napi::Object>();
    Leftover(env, init.Get("aToB"), ab_.leftover, "aToB");
    Leftover(env, init.Get("bToA"), ba_.leftover, "bToA");
    ab_.srcEof = init.Get("aEof").ToBoolean();
    ba_.srcEof = init.Get("bEof").ToBoolean();
    if (ab_.srcEof) firstEof_ = 0;
    else if (ba_.srcEof) firstEof_ = 1;
    uv_loop_t* loop = nullptr;
    napi_get_uv_event_loop(env, &loop);
    // Set up, watching nothing yet (events 0): SetEvents below.
    int rc = pollA_.Start(loop, a_.get(), [this](int status) { Ready(0, status); }, 0);
    if (rc == 0) rc = pollB_.Start(loop, b_.get(), [this](int status) { Ready(1, status); }, 0);
    if (rc != 0) {
      pollA_.Stop();
      pollB_.Stop();
      ThrowErrno(env, "uv_poll_init", -rc);
    }
    callback_ = Napi::Persistent(info[1].As<Napi::Function>());
    asyncContext_ = std::make_unique<Napi::AsyncContext>(env, "takeover:splice-relay");
    started_ = true;
    Ref();  // alive while relaying, like a socket
    // The first pass runs from the loop (a connected socket is writable at once), so that onEnd
    // never runs inside start().
    rc = pollA_.SetEvents(UV_READABLE | UV_WRITABLE);
    if (rc == 0) rc = pollB_.SetEvents(UV_READABLE | UV_WRITABLE);
    if (rc != 0) {
      ended_ = true;
      callback_.Reset();
      asyncContext_.reset();
      Release();
      Unref();
      ThrowErrno(env, "uv_poll_start", -rc);
    }
    return env.Undefined();
  }

  static void Leftover(Napi::Env env, Napi::Value v, std::vector<uint8_t>& out, const char* name) {
    if (v.IsUndefined() || v.IsNull()) return;
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
      ThrowInvalidArg(env, std::string(name) + " must be a Uint8Array");
    auto a = v.As<Napi::Uint8Array>();
    out.assign(a.Data(), a.Data() + a.ByteLength());
  }

  // side 0: a, 1: b.
  void Ready(int side, int status) {
    // libuv reports POLLERR as an error (UV_EBADF) and stops the handle (the next SetEvents
    // starts it again): the socket's own error (a reset) is found by the next splice, or else
    // read from SO_ERROR.
    if (status < 0) pendingError_ = side + 1;
    Run();
  }

  void Run() {
    if (!started_ || ended_) return;
    Failure f;
    bool ok = Pump(ab_, f) && Pump(ba_, f);
    if (ok && pendingError_ != 0) {
      int side = pendingError_ - 1;
      pendingError_ = 0;
      int err = 0;
      socklen_t len = sizeof err;
      int fd = side == 0 ? a_.get() : b_.get();
      if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
      if (err != 0) {
        f = {err, "poll", side};
        ok = false;
      }
    }
    if (firstEof_ < 0) {
      if (ab_.srcEof) firstEof_ = 0;
      else if (ba_.srcEof) firstEof_ = 1;
    }
    if (!ok) return End(&f);
    if (ab_.done && ba_.done) return End(nullptr);
    int evA = (ab_.wantRead ? UV_READABLE : 0) | (ba_.wantWrite ? UV_WRITABLE : 0);
    int evB = (ba_.wantRead ? UV_READABLE : 0) | (ab_.wantWrite ? UV_WRITABLE : 0);
    int rc = pollA_.SetEvents(evA);
    if (rc == 0) rc = pollB_.SetEvents(evB);
    if (rc != 0) {
      f = {-rc, "uv_poll_start", 0};
      End(&f);
    }
  }

  // Closes everything, then tells JS (the callback may drop the last reference to this object).
  void End(const Failure* f) {
    ended_ = true;
    Release();
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    Napi::Object info = CountsObject(env);
    Napi::Value err = env.Null();
    if (f) {
      Napi::Error e = ErrnoError(env, f->syscall, f->err);
      err = e.Value();
      info.Set("side", f->side == 0 ? "a" : "b");
    }
    if (firstEof_ >= 0) info.Set("firstEof", firstEof_ == 0 ? "a" : "b");
    Napi::FunctionReference cb = std::move(callback_);
    auto ctx = std::move(asyncContext_);
    Unref();
    try {
      cb.MakeCallback(Value(), {err, info}, *ctx);
    } catch (const Napi::Error& e) {
      napi_fatal_exception(env, e.Value());
    }
  }

  void Release() {
    pollA_.Stop();
    pollB_.Stop();
    // A pipe with bytes in it is closed (they are lost with the relay); an empty one goes back.
    for (Direction* d : {&ab_, &ba_}) {
      if (d->inPipe == 0) pipePool.Give(d->pipe);
      d->pipe = Pipe();
      d->inPipe = 0;
    }
    a_.reset();
    b_.reset();
  }

  Napi::Object CountsObject(Napi::Env env) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("aToB", Napi::Number::New(env, static_cast<double>(ab_.bytes)));
    o.Set("bToA", Napi::Number::New(env, static_cast<double>(ba_.bytes)));
    return o;
  }

  // bytes(): {aToB, bToA} written so far (leftovers included).
  Napi::Value Bytes(const Napi::CallbackInfo& info) { return CountsObject(info.Env()); }

  // close(): stops and closes both sockets and the pipes (the kernel sends FIN, or RST when
  // unread bytes remain); onEnd is not called. Idempotent; returns the counts.
  Napi::Value Close(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (started_ && !ended_) {
      ended_ = true;
      callback_.Reset();
      asyncContext_.reset();
      Unref();
    }
    ended_ = true;
    Release();
    return CountsObject(env);
  }

  // detach(): stops relaying without closing anything and gives both sockets back, for another
  // relay to go on where this one stopped (a relay keeper handing its relays to its replacement):
  // {fdA, fdB, aToB, bToA, aEof, bEof, bytes}. fdA/fdB are the caller's now (it closes them);
  // aToB/bToA: bytes read from one socket and not yet written to the other (the leftover still
  // unsent, then what the pipe holds: read out of it, in order); aEof/bEof: that socket's EOF was
  // read (relayed already or not: a second shutdown(SHUT_WR) is harmless). onEnd is not called.
  // Throws (syscall 'read') when a pipe cannot be read out: the relay is closed then (the bytes in
  // it are lost with it).
  Napi::Value Detach(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!started_ || ended_ || !a_) ThrowInvalidArg(env, "SpliceRelay.detach: not relaying");
    pollA_.Stop();
    pollB_.Stop();
    Napi::Object out = Napi::Object::New(env);
    for (Direction* d : {&ab_, &ba_}) {
      std::vector<uint8_t> bytes(d->leftover.begin() + static_cast<std::ptrdiff_t>(d->leftoverAt), d->leftover.end());
      size_t at = bytes.size();
      bytes.resize(at + d->inPipe);
      while (at < bytes.size()) {
        ssize_t n = read(d->pipe.r.get(), bytes.data() + at, bytes.size() - at);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
          int err = n < 0 ? errno : EIO;
          Close(info);
          ThrowErrno(env, "read", err);
        }
        at += static_cast<size_t>(n);
      }
      d->inPipe = 0;
      out.Set(d == &ab_ ? "aToB" : "bToA", Napi::Buffer<uint8_t>::Copy(env, bytes.data(), bytes.size()));
    }
    out.Set("aEof", ab_.srcEof);
    out.Set("bEof", ba_.srcEof);
    out.Set("bytes", CountsObject(env));
    out.Set("fdA", Napi::Number::New(env, a_.get()));
    out.Set("fdB", Napi::Number::New(env, b_.get()));
    // Given away only once nothing can throw any more (until then the UniqueFds close them).
    a_.release();
    b_.release();
    ended_ = true;
    callback_.Reset();
    asyncContext_.reset();
    Release();
    Unref();
    return out;
  }

  UniqueFd a_;
  UniqueFd b_;
  Direction ab_;
  Direction ba_;
  UvPollWatch pollA_;
  UvPollWatch pollB_;
  bool started_ = false;
  bool ended_ = false;
  int pendingError_ = 0;  // 1: a reported POLLERR, 2: b
  int firstEof_ = -1;
  Napi::FunctionReference callback_;
  std::unique_ptr<Napi::AsyncContext> asyncContext_;
};

}  // namespace

void InitSpliceRelay(Napi::Env env, Napi::Object exports) {
  exports.Set("SpliceRelay", SpliceRelay::Define(env));
  // splicePipesFree(): empty pipes this thread's pool keeps (2 fds each), for fd accounting.
  exports.Set("splicePipesFree", Napi::Function::New(env, [](const Napi::CallbackInfo& info) {
                return Napi::Number::New(info.Env(), static_cast<double>(pipePool.free()));
              }));
}

}  // namespace takeover
