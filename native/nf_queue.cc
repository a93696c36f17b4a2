// EgressQueue: the packets a netfilter NFQUEUE rule hands to this process (nfnetlink_queue),
// each held by the kernel until a verdict names it. The agent's output commit uses it: a
// service's outgoing segments wait until the backup has their copy, so a client never
// acknowledges a byte the backup could lack (src/net/shadow/egress-hold.ts decides what is
// released when; this file does the netlink bytes).
//
// One netlink socket per queue number, non-blocking, watched with uv_poll on the event loop.
// The whole configuration goes in one CONFIG message (BIND, copy mode PACKET with a range,
// queue length, GSO flag): a queue bound but not yet configured would hand packets over without
// their payload. GSO packets come unsegmented (NFQA_CFG_F_GSO): one message per send, not per MSS.
// Verdicts go as VERDICT_BATCH: every packet up to an id, in the queue's order (ids only grow).
// The kernel drops a queued packet it cannot hand over (socket buffer full): TCP sends it
// again, and the copy has never seen it, so nothing in the copy is ahead of the wire.
// glibc's netinet/in.h first: the kernel headers then leave its definitions alone (libc-compat.h).
#include <arpa/inet.h>
#include <sys/socket.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_queue.h>
#include <linux/netlink.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <span>
#include <vector>

#include "arg_checks.h"
#include "errors.h"
#include "modules.h"
#include "packet_parse.h"
#include "segment_object.h"
#include "unique_fd.h"
#include "uv_poll_watch.h"

namespace takeover {
namespace {

constexpr uint16_t kPacketType = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET;
constexpr uint16_t kConfigType = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_CONFIG;
constexpr uint16_t kVerdictBatchType = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_VERDICT_BATCH;
// A message carries one packet of up to 64 KiB (GSO) plus its attributes.
constexpr size_t kRecvBuffer = 128 * 1024;
// Messages read per wake-up: the loop turns at least this often under a flood.
constexpr int kMaxPerWakeup = 512;
// The socket's receive buffer: held packets queued for us while the loop is busy (bytes).
constexpr int kSocketBuffer = 16 * 1024 * 1024;

double NowMs() {
  using namespace std::chrono;
  return duration<double, std::milli>(system_clock::now().time_since_epoch()).count();
}

// Builds one nfnetlink message: header, nfgenmsg (queue number as res_id), then attributes.
class Message {
 public:
  Message(uint16_t type, uint16_t flags, uint16_t queue, uint32_t seq) {
    nlmsghdr h{};
    h.nlmsg_type = type;
    h.nlmsg_flags = NLM_F_REQUEST | flags;
    h.nlmsg_seq = seq;
    Append(&h, sizeof h);
    nfgenmsg g{};
    g.nfgen_family = AF_UNSPEC;
    g.version = NFNETLINK_V0;
    g.res_id = htons(queue);
    Append(&g, sizeof g);
  }
  void Attr(uint16_t type, const void* data, size_t len) {
    nlattr a{};
    a.nla_type = type;
    a.nla_len = static_cast<uint16_t>(NLA_HDRLEN + len);
    Append(&a, sizeof a);
    Append(data, len);
  }
  std::span<const uint8_t> Bytes() {
    reinterpret_cast<nlmsghdr*>(buf_.data())->nlmsg_len = static_cast<uint32_t>(buf_.size());
    return buf_;
  }

 private:
  void Append(const void* data, size_t len) {
    const auto* p = static_cast<const uint8_t*>(data);
    buf_.insert(buf_.end(), p, p + len);
    buf_.resize(NLMSG_ALIGN(buf_.size()), 0);
  }
  std::vector<uint8_t> buf_;
};

struct PacketView {
  uint32_t id = 0;
  const uint8_t* payload = nullptr;
  size_t payloadLength = 0;
};

// The packet id and payload of one PACKET message; false when it has no header attribute.
bool ReadPacket(const nlmsghdr* h, PacketView& out) {
  const size_t total = h->nlmsg_len;
  size_t off = NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(nfgenmsg));
  const auto* base = reinterpret_cast<const uint8_t*>(h);
  bool haveId = false;
  while (off + NLA_HDRLEN <= total) {
    const auto* a = reinterpret_cast<const nlattr*>(base + off);
    if (a->nla_len < NLA_HDRLEN || off + a->nla_len > total) break;
    const uint8_t* data = base + off + NLA_HDRLEN;
    const size_t len = a->nla_len - NLA_HDRLEN;
    switch (a->nla_type & NLA_TYPE_MASK) {
      case NFQA_PACKET_HDR:
        if (len >= sizeof(nfqnl_msg_packet_hdr)) {
          nfqnl_msg_packet_hdr ph;
          std::memcpy(&ph, data, sizeof ph);
          out.id = ntohl(ph.packet_id);
          haveId = true;
        }
        break;
      case NFQA_PAYLOAD:
        out.payload = data;
        out.payloadLength = len;
        break;
      default:
        break;
    }
    off += NLA_ALIGN(a->nla_len);
  }
  return haveId;
}

class EgressQueue : public Napi::ObjectWrap<EgressQueue> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "EgressQueue",
                       {InstanceMethod<&EgressQueue::Start>("start"), InstanceMethod<&EgressQueue::Verdict>("verdict"),
                        InstanceMethod<&EgressQueue::Stats>("stats"), InstanceMethod<&EgressQueue::Close>("close")});
  }

  // new EgressQueue(queueNumber, copyBytes, maxLength): binds the queue (EBUSY: another socket
  // has it; EPERM without CAP_NET_ADMIN).
  explicit EgressQueue(const Napi::CallbackInfo& info) : Napi::ObjectWrap<EgressQueue>(info) {
    Napi::Env env = info.Env();
    queue_ = static_cast<uint16_t>(IntArg(info, 0, "queueNumber", 0, 65535));
    const auto copyBytes = static_cast<uint32_t>(IntArg(info, 1, "copyBytes", 0, 65535));
    const auto maxLength = static_cast<uint32_t>(IntArg(info, 2, "maxLength", 1, 1 << 20));
    fd_.reset(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_NETFILTER));
    if (!fd_) ThrowErrno(env, "socket", errno);
    sockaddr_nl local{};
    local.nl_family = AF_NETLINK;
    if (bind(fd_.get(), reinterpret_cast<sockaddr*>(&local), sizeof local) != 0) ThrowErrno(env, "bind", errno);
    int size = kSocketBuffer;
    if (setsockopt(fd_.get(), SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) != 0) {
      setsockopt(fd_.get(), SOL_SOCKET, SO_RCVBUF, &size, sizeof size);  // without CAP_NET_ADMIN: up to rmem_max
    }
    Message m(kConfigType, NLM_F_ACK, queue_, ++seq_);
    nfqnl_msg_config_cmd cmd{};
    cmd.command = NFQNL_CFG_CMD_BIND;
    cmd.pf = htons(AF_UNSPEC);
    m.Attr(NFQA_CFG_CMD, &cmd, sizeof cmd);
    nfqnl_msg_config_params params{};
    params.copy_range = htonl(copyBytes);
    params.copy_mode = NFQNL_COPY_PACKET;
    m.Attr(NFQA_CFG_PARAMS, &params, sizeof params);
    const uint32_t maxLen = htonl(maxLength);
    m.Attr(NFQA_CFG_QUEUE_MAXLEN, &maxLen, sizeof maxLen);
    const uint32_t flags = htonl(NFQA_CFG_F_GSO);
    m.Attr(NFQA_CFG_MASK, &flags, sizeof flags);
    m.Attr(NFQA_CFG_FLAGS, &flags, sizeof flags);
    int err = Request(m);
    if (err != 0) ThrowErrno(env, "nfqueue bind", err);
  }

 private:
  // Sends a request with NLM_F_ACK and reads until its ACK (the kernel handles it within the
  // send, so the ACK is already queued). Packets read meanwhile are kept for the first wake-up.
  // Returns 0 or the errno the kernel answered.
  int Request(Message& m) {
    auto bytes = m.Bytes();
    const uint32_t seq = reinterpret_cast<const nlmsghdr*>(bytes.data())->nlmsg_seq;
    if (send(fd_.get(), bytes.data(), bytes.size(), 0) < 0) return errno;
    std::vector<uint8_t> buf(kRecvBuffer);
    for (int reads = 0; reads < 4096; reads++) {
      ssize_t n = recv(fd_.get(), buf.data(), buf.size(), 0);
      if (n < 0) return errno == EAGAIN ? ETIMEDOUT : errno;
      // len stays signed: NLMSG_NEXT subtracts the aligned length, which may pass the end of an
      // unaligned last message, and only a negative int fails NLMSG_OK (a size_t would wrap).
      int len = static_cast<int>(n);
      for (auto* h = reinterpret_cast<nlmsghdr*>(buf.data()); NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
        if (h->nlmsg_type == NLMSG_ERROR && h->nlmsg_seq == seq) {
          if (h->nlmsg_len < NLMSG_LENGTH(sizeof(nlmsgerr))) return EPROTO;
          return -static_cast<const nlmsgerr*>(NLMSG_DATA(h))->error;
        }
        if (h->nlmsg_type == kPacketType) early_.emplace_back(reinterpret_cast<uint8_t*>(h), reinterpret_cast<uint8_t*>(h) + h->nlmsg_len);
      }
    }
    return ETIMEDOUT;
  }

  // start(onPackets): onPackets([{ id, timeMs, segment? }]) for each batch read; segment is absent
  // when the packet is not a whole TCP segment over IPv4/IPv6 (it is held all the same).
  Napi::Value Start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!fd_) ThrowErrno(env, "uv_poll_start", EBADF);
    if (!info[0].IsFunction()) ThrowInvalidArg(env, "start(onPackets) needs a function");
    if (poll_.active()) return env.Undefined();
    callback_ = Napi::Persistent(info[0].As<Napi::Function>());
    asyncContext_ = std::make_unique<Napi::AsyncContext>(env, "takeover:egress-queue");
    uv_loop_t* loop = nullptr;
    napi_get_uv_event_loop(env, &loop);
    int rc = poll_.Start(loop, fd_.get(), [this](int status) { OnReadable(status); });
    if (rc != 0) {
      callback_.Reset();
      asyncContext_.reset();
      ThrowErrno(env, "uv_poll_start", -rc);
    }
    Ref();  // alive while watching, like a socket
    if (!early_.empty()) OnReadable(0);
    return env.Undefined();
  }

  void OnReadable(int status) {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    if (status < 0) poll_.Resume();
    Napi::Array batch = Napi::Array::New(env);
    uint32_t n = 0;
    // Each packet's time is taken after the recv() that returned it and before the callback (so
    // before any verdict): the queue had it by then, and the service had not seen an accepted
    // one yet. A replay check orders runs by it (docs/CONTINUE.md, matchWrites from a stream).
    double timeMs = NowMs();
    auto take = [&](const nlmsghdr* h) {
      if (h->nlmsg_type == NLMSG_ERROR) {
        if (h->nlmsg_len >= NLMSG_LENGTH(sizeof(nlmsgerr)) && static_cast<const nlmsgerr*>(NLMSG_DATA(h))->error != 0) verdictErrors_++;
        return;
      }
      if (h->nlmsg_type != kPacketType) return;
      PacketView p;
      if (!ReadPacket(h, p)) {
        malformed_++;
        return;
      }
      received_++;
      lastId_ = p.id;
      Napi::Object o = Napi::Object::New(env);
      o.Set("id", Napi::Number::New(env, p.id));
      o.Set("timeMs", timeMs);
      TcpSegment seg;
      if (p.payload && ParseTcpFrame({p.payload, p.payloadLength}, p.payloadLength, LinkType::kRawIp, seg)) {
        o.Set("segment", SegmentObject(env, seg, timeMs, 65535));
      } else {
        unparsed_++;
      }
      batch.Set(n++, o);
    };
    for (auto& m : early_) take(reinterpret_cast<const nlmsghdr*>(m.data()));
    early_.clear();
    if (buf_.empty()) buf_.resize(kRecvBuffer);
    for (int reads = 0; reads < kMaxPerWakeup; reads++) {
      ssize_t r = recv(fd_.get(), buf_.data(), buf_.size(), 0);
      if (r < 0) {
        if (errno == ENOBUFS) {
          overflows_++;  // packets the kernel could not hand over were dropped (sent again by TCP)
          continue;
        }
        break;  // EAGAIN: read all
      }
      timeMs = NowMs();
      int len = static_cast<int>(r);  // signed, as in Request()
      for (auto* h = reinterpret_cast<nlmsghdr*>(buf_.data()); NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) take(h);
    }
    if (n == 0) return;
    try {
      callback_.MakeCallback(Value(), {batch}, *asyncContext_);
    } catch (const Napi::Error& e) {
      napi_fatal_exception(env, e.Value());
    }
  }

  // Sends a VERDICT_BATCH: every held packet up to `id` (queue order) accepted (or dropped).
  int SendVerdict(uint32_t id, bool accept) {
    Message m(kVerdictBatchType, 0, queue_, ++seq_);
    nfqnl_msg_verdict_hdr v{};
    v.verdict = htonl(accept ? NF_ACCEPT : NF_DROP);
    v.id = htonl(id);
    m.Attr(NFQA_VERDICT_HDR, &v, sizeof v);
    auto bytes = m.Bytes();
    return send(fd_.get(), bytes.data(), bytes.size(), 0) < 0 ? errno : 0;
  }

  // verdict(id, accept): releases (accept true) or drops every packet held up to id.
  Napi::Value Verdict(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const auto id = static_cast<uint32_t>(IntArg(info, 0, "id", 0, UINT32_MAX));
    if (!info[1].IsBoolean()) ThrowInvalidArg(env, "accept must be a boolean");
    if (!fd_) ThrowErrno(env, "nfqueue verdict", EBADF);
    int err = SendVerdict(id, info[1].As<Napi::Boolean>().Value());
    if (err != 0) ThrowErrno(env, "nfqueue verdict", err);
    return env.Undefined();
  }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    o.Set("received", Napi::Number::New(env, static_cast<double>(received_)));
    o.Set("unparsed", Napi::Number::New(env, static_cast<double>(unparsed_)));
    o.Set("malformed", Napi::Number::New(env, static_cast<double>(malformed_)));
    o.Set("overflows", Napi::Number::New(env, static_cast<double>(overflows_)));
    o.Set("verdictErrors", Napi::Number::New(env, static_cast<double>(verdictErrors_)));
    return o;
  }

  // close(): releases what is still held (an unbound queue would drop it), unbinds, closes.
  // Idempotent.
  Napi::Value Close(const Napi::CallbackInfo& info) {
    if (poll_.active()) {
      poll_.Stop();
      callback_.Reset();
      asyncContext_.reset();
      Unref();
    }
    if (fd_) {
      // Everything read so far, accepted: a verdict for ids already released is a no-op.
      if (received_ > 0) SendVerdict(lastId_, true);
      Message m(kConfigType, 0, queue_, ++seq_);
      nfqnl_msg_config_cmd cmd{};
      cmd.command = NFQNL_CFG_CMD_UNBIND;
      cmd.pf = htons(AF_UNSPEC);
      m.Attr(NFQA_CFG_CMD, &cmd, sizeof cmd);
      auto bytes = m.Bytes();
      send(fd_.get(), bytes.data(), bytes.size(), 0);  // closing the socket unbinds too
      fd_.reset();
    }
    return info.Env().Undefined();
  }

  UniqueFd fd_;
  uint16_t queue_ = 0;
  uint32_t seq_ = 0;
  UvPollWatch poll_;
  Napi::FunctionReference callback_;
  std::unique_ptr<Napi::AsyncContext> asyncContext_;
  std::vector<std::vector<uint8_t>> early_;
  std::vector<uint8_t> buf_;
  uint32_t lastId_ = 0;
  uint64_t received_ = 0, unparsed_ = 0, malformed_ = 0, overflows_ = 0, verdictErrors_ = 0;
};

}  // namespace

void InitNfQueue(Napi::Env env, Napi::Object exports) { exports.Set("EgressQueue", EgressQueue::Define(env)); }

}  // namespace takeover
