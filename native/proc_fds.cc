// socketOwnersAsync: which process fd holds which socket, read from /proc/PID/fd on a libuv
// worker. A host with thousands of connections has thousands of fd links to read; done on the
// event loop that would stall the agent's heartbeats (issue 9). Only bytes come back: triples
// (inode, pid, fd); which socket to act on is decided in TypeScript (src/net/close-local.ts).
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <unordered_set>
#include <vector>

#include "arg_checks.h"
#include "errors.h"
#include "modules.h"

namespace takeover {
namespace {

// A directory stream from an open fd (which it takes over), closed on every path out; when it
// could not be opened, error() is the errno of the open.
class Dir {
 public:
  explicit Dir(int dirfd) : error_(dirfd < 0 ? errno : 0) {
    if (dirfd < 0) return;
    d_ = fdopendir(dirfd);
    if (!d_) {
      error_ = errno;
      close(dirfd);
    }
  }
  Dir(const Dir&) = delete;
  Dir& operator=(const Dir&) = delete;
  ~Dir() {
    if (d_) closedir(d_);
  }
  DIR* get() const { return d_; }
  int error() const { return error_; }

 private:
  DIR* d_ = nullptr;
  int error_;
};

bool ParseUint(const char* s, uint64_t& out) {
  const char* end = s + std::strlen(s);
  auto [p, ec] = std::from_chars(s, end, out, 10);
  return ec == std::errc() && p == end && p != s;
}

// "socket:[12345]" -> 12345.
bool SocketInode(const char* link, size_t len, uint64_t& inode) {
  static constexpr char kPrefix[] = "socket:[";
  constexpr size_t kPrefixLen = sizeof kPrefix - 1;
  if (len < kPrefixLen + 2 || std::memcmp(link, kPrefix, kPrefixLen) != 0 || link[len - 1] != ']') return false;
  auto [p, ec] = std::from_chars(link + kPrefixLen, link + len - 1, inode, 10);
  return ec == std::errc() && p == link + len - 1;
}

class OwnersWorker : public Napi::AsyncWorker {
 public:
  OwnersWorker(Napi::Env env, std::unordered_set<uint64_t> wanted, int pid)
      : Napi::AsyncWorker(env, "takeover:socketOwners"), deferred_(Napi::Promise::Deferred::New(env)), wanted_(std::move(wanted)), pid_(pid) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    Dir proc(open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!proc.get()) {
      errno_ = proc.error();
      return;
    }
    char path[sizeof(dirent::d_name) + 4];
    if (pid_ > 0) {
      // One process: that it is gone (or hidden) is the caller's error.
      std::snprintf(path, sizeof path, "%d/fd", pid_);
      Dir fds(openat(dirfd(proc.get()), path, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      if (!fds.get()) {
        errno_ = fds.error();
        return;
      }
      ScanFds(fds, pid_);
      return;
    }
    while (dirent* e = readdir(proc.get())) {
      uint64_t pid = 0;
      if (!ParseUint(e->d_name, pid) || pid == 0 || pid > INT32_MAX) continue;
      std::snprintf(path, sizeof path, "%s/fd", e->d_name);
      // A process that exits, or that we may not look into, is skipped.
      Dir fds(openat(dirfd(proc.get()), path, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      if (fds.get()) ScanFds(fds, static_cast<int>(pid));
    }
  }

  void ScanFds(const Dir& fds, int pid) {
    char link[64];
    while (dirent* f = readdir(fds.get())) {
      uint64_t fd = 0;
      if (!ParseUint(f->d_name, fd) || fd > INT32_MAX) continue;
      ssize_t n = readlinkat(dirfd(fds.get()), f->d_name, link, sizeof link - 1);
      if (n <= 0) continue;  // closed while we read
      uint64_t inode = 0;
      if (!SocketInode(link, static_cast<size_t>(n), inode)) continue;
      if (!wanted_.empty() && !wanted_.count(inode)) continue;
      // The first holder found is enough to act through; later ones are the same socket.
      if (!found_.insert(inode).second) continue;
      triples_.insert(triples_.end(), {static_cast<double>(inode), static_cast<double>(pid), static_cast<double>(fd)});
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (errno_ != 0) {
      deferred_.Reject(ErrnoError(env, "open", errno_).Value());
      return;
    }
    Napi::Float64Array out = Napi::Float64Array::New(env, triples_.size());
    // (memcpy with an empty vector's null pointer is undefined even for 0 bytes)
    if (!triples_.empty()) std::memcpy(out.Data(), triples_.data(), triples_.size() * sizeof(double));
    deferred_.Resolve(out);
  }

  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  std::unordered_set<uint64_t> wanted_;
  int pid_;
  std::unordered_set<uint64_t> found_;
  std::vector<double> triples_;
  int errno_ = 0;
};

// socketOwnersAsync(inodes?: number[], pid?: number) -> Promise<Float64Array>: (inode, pid, fd)
// for one holder of each socket inode (only those listed, when a list is given), over every
// process, or only over `pid` (rejects with ENOENT when it is gone).
Napi::Value SocketOwnersAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int pid = 0;
  if (info.Length() > 1 && !info[1].IsUndefined()) pid = static_cast<int>(IntArg(info, 1, "pid", 1, INT32_MAX));
  std::unordered_set<uint64_t> wanted;
  if (info.Length() > 0 && !info[0].IsUndefined()) {
    if (!info[0].IsArray()) ThrowInvalidArg(env, "inodes must be an array of socket inode numbers");
    Napi::Array a = info[0].As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length(); i++)
      wanted.insert(static_cast<uint64_t>(IntValue(env, a.Get(i), "inodes[]", 1, int64_t{1} << 53)));
    if (wanted.empty()) {
      // Nothing asked for: nothing to scan.
      auto d = Napi::Promise::Deferred::New(env);
      d.Resolve(Napi::Float64Array::New(env, 0));
      return d.Promise();
    }
  }
  auto* worker = new OwnersWorker(env, std::move(wanted), pid);
  Napi::Promise p = worker->Promise();
  worker->Queue();
  return p;
}

}  // namespace

void InitProcFds(Napi::Env env, Napi::Object exports) {
  exports.Set("socketOwnersAsync", Napi::Function::New(env, SocketOwnersAsync, "socketOwnersAsync"));
}

}  // namespace takeover
