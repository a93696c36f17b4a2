// SG_IO: one SCSI command through the Linux sg v3 interface (works on /dev/sgN and on block
// devices /dev/sdX). The ioctl blocks until the target answers or the timeout expires, so it
// runs on a libuv worker thread (Napi::AsyncWorker) and never on the event loop. Only bytes
// move here: the CDB and data-out go in, status, sense and data-in come out; what they mean is
// decided in TypeScript (src/scsi/).
#include <scsi/sg.h>
#include <sys/ioctl.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <vector>

#include "arg_checks.h"
#include "errors.h"
#include "modules.h"

namespace takeover {
namespace {

constexpr size_t kMaxCdb = 16;
constexpr size_t kMaxData = 16 * 1024 * 1024;
constexpr size_t kSenseLen = 252;  // the most SPC allows; the target says how much it filled

uint64_t NowUs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000u + static_cast<uint64_t>(ts.tv_nsec) / 1000u;
}

class SgIoWorker : public Napi::AsyncWorker {
 public:
  SgIoWorker(Napi::Env env, int fd, std::vector<uint8_t> cdb, std::vector<uint8_t> data, int direction,
             unsigned timeout_ms)
      : Napi::AsyncWorker(env, "takeover:sgIo"),
        deferred_(Napi::Promise::Deferred::New(env)),
        fd_(fd),
        cdb_(std::move(cdb)),
        data_(std::move(data)),
        direction_(direction),
        timeout_ms_(timeout_ms),
        sense_(kSenseLen) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    sg_io_hdr_t hdr{};
    hdr.interface_id = 'S';
    hdr.cmdp = cdb_.data();
    hdr.cmd_len = static_cast<unsigned char>(cdb_.size());
    hdr.dxfer_direction = direction_;
    hdr.dxferp = data_.empty() ? nullptr : data_.data();
    hdr.dxfer_len = static_cast<unsigned>(data_.size());
    hdr.sbp = sense_.data();
    hdr.mx_sb_len = static_cast<unsigned char>(sense_.size());
    hdr.timeout = timeout_ms_;
    uint64_t start = NowUs();
    int rc = ioctl(fd_, SG_IO, &hdr);
    duration_us_ = NowUs() - start;
    if (rc < 0) {
      errno_ = errno;
      return;
    }
    status_ = hdr.status;
    masked_status_ = hdr.masked_status;
    host_status_ = hdr.host_status;
    driver_status_ = hdr.driver_status;
    resid_ = hdr.resid;
    info_ = hdr.info;
    sense_.resize(hdr.sb_len_wr);
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (errno_ != 0) {
      deferred_.Reject(ErrnoError(env, "ioctl", errno_).Value());
      return;
    }
    Napi::Object r = Napi::Object::New(env);
    r.Set("status", status_);
    r.Set("maskedStatus", masked_status_);
    r.Set("hostStatus", host_status_);
    r.Set("driverStatus", driver_status_);
    r.Set("info", info_);
    r.Set("resid", resid_);
    r.Set("durationUs", static_cast<double>(duration_us_));
    r.Set("sense", Napi::Buffer<uint8_t>::Copy(env, sense_.data(), sense_.size()));
    if (direction_ == SG_DXFER_FROM_DEV) {
      // resid is what the target did not fill; clamp against a bogus value.
      size_t got = data_.size() - std::min<size_t>(data_.size(), resid_ < 0 ? 0 : static_cast<size_t>(resid_));
      r.Set("data", Napi::Buffer<uint8_t>::Copy(env, data_.data(), got));
    } else {
      r.Set("data", Napi::Buffer<uint8_t>::New(env, 0));
    }
    deferred_.Resolve(r);
  }

  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  int fd_;
  std::vector<uint8_t> cdb_;
  std::vector<uint8_t> data_;
  int direction_;
  unsigned timeout_ms_;
  std::vector<uint8_t> sense_;
  int errno_ = 0;
  uint64_t duration_us_ = 0;
  unsigned status_ = 0, masked_status_ = 0, host_status_ = 0, driver_status_ = 0, info_ = 0;
  int resid_ = 0;
};

std::vector<uint8_t> BytesOf(const Napi::Value& v) {
  auto b = v.As<Napi::Buffer<uint8_t>>();
  return std::vector<uint8_t>(b.Data(), b.Data() + b.Length());
}

// sgIo(fd, cdb, dataInLength, dataOut, timeoutMs) -> Promise. The fd must stay open until the
// promise settles (the worker uses it on another thread).
Napi::Value SgIo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  if (!info[1].IsBuffer()) ThrowInvalidArg(env, "cdb must be a Buffer");
  std::vector<uint8_t> cdb = BytesOf(info[1]);
  if (cdb.size() < 6 || cdb.size() > kMaxCdb) ThrowInvalidArg(env, "cdb must be 6 to 16 bytes");
  int64_t data_in = IntArg(info, 2, "dataIn", 0, kMaxData);
  bool has_out = !info[3].IsUndefined() && !info[3].IsNull();
  if (has_out && !info[3].IsBuffer()) ThrowInvalidArg(env, "dataOut must be a Buffer");
  if (has_out && data_in > 0) ThrowInvalidArg(env, "a command moves data one way: dataIn or dataOut, not both");
  std::vector<uint8_t> data;
  int direction = SG_DXFER_NONE;
  if (has_out) {
    data = BytesOf(info[3]);
    if (data.size() > kMaxData) ThrowInvalidArg(env, "dataOut must be at most 16 MiB");
    if (!data.empty()) direction = SG_DXFER_TO_DEV;
  } else if (data_in > 0) {
    data.resize(static_cast<size_t>(data_in));
    direction = SG_DXFER_FROM_DEV;
  }
  unsigned timeout = static_cast<unsigned>(IntArg(info, 4, "timeoutMs", 1, 3600000));
  auto* worker = new SgIoWorker(env, fd, std::move(cdb), std::move(data), direction, timeout);
  Napi::Promise p = worker->Promise();
  worker->Queue();
  return p;
}

}  // namespace

void InitSgIo(Napi::Env env, Napi::Object exports) {
  exports.Set("sgIo", Napi::Function::New(env, SgIo, "sgIo"));
}

}  // namespace takeover
