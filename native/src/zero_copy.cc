// Zero-copy syscalls. sendfile/copy_file_range run as AsyncWorkers on the libuv pool (see
// native/README.md, "Threading"); the lseek/fallocate/fadvise helpers are quick metadata calls
// and stay synchronous.
#include <fcntl.h>
#include <poll.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <netinet/in.h>
#include <linux/tcp.h>  // struct tcp_info with tcpi_min_rtt (glibc's netinet/tcp.h lacks it)
#include <cstddef>
#include <cstring>
#include <string>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <vector>

#include "napi_util.h"

namespace dwcp {
namespace {

constexpr size_t kMaxStep = size_t{1} << 30;  // bytes per syscall; the kernel caps near 2 GiB

size_t step(uint64_t left) { return left < kMaxStep ? static_cast<size_t>(left) : kMaxStep; }

// sendfile(2) from a file to a socket (or file), looping over partial writes. A Node socket fd
// is non-blocking: on EAGAIN wait for POLLOUT, at most timeout_ms per wait.
class SendfileWorker final : public PromiseWorker {
 public:
  SendfileWorker(Napi::Env env, int out_fd, int in_fd, int64_t offset, int64_t length, int timeout_ms)
      : PromiseWorker(env), out_(out_fd), in_(in_fd), off_(offset), left_(length), timeout_(timeout_ms) {}

  void Execute() override {
    while (left_ > 0) {
      const ssize_t n = ::sendfile(out_, in_, &off_, step(left_));
      if (n > 0) {
        done_ += n;
        left_ -= n;
      } else if (n == 0) {
        return;  // end of the input file: report what was sent
      } else if (errno == EAGAIN) {
        if (!WaitWritable()) return;
      } else if (errno != EINTR) {
        return Fail(errno, "sendfile");
      }
    }
  }
  Napi::Value Result(Napi::Env env) override { return Napi::Number::New(env, static_cast<double>(done_)); }

 private:
  bool WaitWritable() {
    pollfd p{out_, POLLOUT, 0};
    for (;;) {
      const int r = ::poll(&p, 1, timeout_);
      if (r > 0) return true;  // writable, or an error the next sendfile will report
      if (r == 0) {
        Fail(ETIMEDOUT, "poll");
        return false;
      }
      if (errno != EINTR) {
        Fail(errno, "poll");
        return false;
      }
    }
  }

  int out_, in_;
  off_t off_;
  int64_t left_;
  int timeout_;
  int64_t done_ = 0;
};

// copy_file_range(2) between files (reflink/server-side copy where the file system can), with a
// pread/pwrite loop when the kernel or file system cannot (EXDEV, ENOSYS, EOPNOTSUPP, EINVAL).
class CopyRangeWorker final : public PromiseWorker {
 public:
  CopyRangeWorker(Napi::Env env, int in_fd, int64_t in_off, int out_fd, int64_t out_off, int64_t length)
      : PromiseWorker(env), in_(in_fd), out_(out_fd), in_off_(in_off), out_off_(out_off), left_(length) {}

  void Execute() override {
    while (left_ > 0) {
      const ssize_t n = ::copy_file_range(in_, &in_off_, out_, &out_off_, step(left_), 0);
      if (n > 0) {
        done_ += n;
        left_ -= n;
      } else if (n == 0) {
        return;
      } else if (done_ == 0 && (errno == EXDEV || errno == ENOSYS || errno == EOPNOTSUPP || errno == EINVAL)) {
        return CopyByReadWrite();
      } else if (errno != EINTR) {
        return Fail(errno, "copy_file_range");
      }
    }
  }
  Napi::Value Result(Napi::Env env) override { return Napi::Number::New(env, static_cast<double>(done_)); }

 private:
  void CopyByReadWrite() {
    std::vector<uint8_t> buf(size_t{1} << 20);
    while (left_ > 0) {
      const ssize_t r = ::pread(in_, buf.data(), step(left_) < buf.size() ? step(left_) : buf.size(), in_off_);
      if (r == 0) return;
      if (r < 0) {
        if (errno == EINTR) continue;
        return Fail(errno, "pread");
      }
      for (ssize_t w = 0; w < r;) {
        const ssize_t k = ::pwrite(out_, buf.data() + w, static_cast<size_t>(r - w), out_off_ + w);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) return Fail(errno, "pwrite");
        w += k;
      }
      in_off_ += r;
      out_off_ += r;
      done_ += r;
      left_ -= r;
    }
  }

  int in_, out_;
  loff_t in_off_, out_off_;
  int64_t left_;
  int64_t done_ = 0;
};

// recv(2) from a non-blocking socket into [offset, offset+max) of a buffer until at least `min`
// bytes arrived, the peer closed (fewer: EOF), or nothing arrived for timeout_ms (ETIMEDOUT).
// With stall_ms > 0, nothing arriving for stall_ms returns early with -1 - (bytes so far): a peer
// gone quiet mid-read (a cut link) does not hold a pool thread, which the process's file I/O
// and DNS share; the caller waits for the socket on its event loop and asks for the rest.
// The caller can stop a wait by setting cancel[0] to non-zero: poll() runs in short slices and
// checks it, so the socket itself is never touched (a shutdown would cost the final answer).
// Both buffers are kept alive by references until the worker is done.
class RecvWorker final : public PromiseWorker {
 public:
  RecvWorker(Napi::Env env, int fd, Napi::Uint8Array buf, int64_t offset, int64_t min, int64_t max, int timeout_ms,
             Napi::Int32Array cancel, int stall_ms)
      : PromiseWorker(env),
        fd_(fd),
        data_(buf.Data() + offset),
        min_(min),
        max_(max),
        timeout_(timeout_ms),
        stall_(stall_ms),
        cancel_(cancel.Data()),
        buf_ref_(Napi::Persistent(buf)),
        cancel_ref_(Napi::Persistent(cancel)) {}

  void Execute() override {
    int waited = 0;
    const int slice = stall_ > 0 && stall_ < kSliceMs ? stall_ : kSliceMs;
    while (got_ < min_) {
      if (__atomic_load_n(cancel_, __ATOMIC_ACQUIRE) != 0) return Fail(ECANCELED, "recv");
      const ssize_t n = ::recv(fd_, data_ + got_, static_cast<size_t>(max_ - got_), MSG_DONTWAIT);
      if (n > 0) {
        got_ += n;
        waited = 0;
      } else if (n == 0) {
        return;  // EOF
      } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
        pollfd p{fd_, POLLIN, 0};
        const int r = ::poll(&p, 1, slice);
        if (r == 0) waited += slice;
        if (r == 0 && waited >= timeout_) return Fail(ETIMEDOUT, "recv");
        if (r == 0 && stall_ > 0 && waited >= stall_) {
          stalled_ = true;
          return;
        }
        if (r < 0 && errno != EINTR) return Fail(errno, "poll");
      } else if (errno != EINTR) {
        return Fail(errno, "recv");
      }
    }
  }
  Napi::Value Result(Napi::Env env) override {
    return Napi::Number::New(env, static_cast<double>(stalled_ ? -1 - got_ : got_));
  }

 private:
  static constexpr int kSliceMs = 50;
  int fd_;
  uint8_t* data_;
  int64_t min_, max_;
  int timeout_;
  int stall_;
  bool stalled_ = false;
  int32_t* cancel_;
  int64_t got_ = 0;
  Napi::Reference<Napi::Uint8Array> buf_ref_;
  Napi::Reference<Napi::Int32Array> cancel_ref_;
};

Napi::Value Recv(const Napi::CallbackInfo& info) {
  return queue<RecvWorker>(info.Env(), i32(info[0]), info[1].As<Napi::Uint8Array>(), i64(info[2]), i64(info[3]),
                           i64(info[4]), i32(info[5]), info[6].As<Napi::Int32Array>(),
                           info.Length() > 7 ? i32(info[7]) : 0);
}

// sync_file_range(SYNC_FILE_RANGE_WRITE): start writeback of a range's dirty pages without
// waiting for it, so that a later fsync finds little left to write. May block briefly on a
// congested queue, hence the pool.
class WritebackWorker final : public PromiseWorker {
 public:
  WritebackWorker(Napi::Env env, int fd, int64_t offset, int64_t length)
      : PromiseWorker(env), fd_(fd), off_(offset), len_(length) {}
  void Execute() override {
    if (::sync_file_range(fd_, off_, len_, SYNC_FILE_RANGE_WRITE) != 0) Fail(errno, "sync_file_range");
  }
  Napi::Value Result(Napi::Env env) override { return env.Undefined(); }

 private:
  int fd_;
  int64_t off_, len_;
};

Napi::Value StartWriteback(const Napi::CallbackInfo& info) {
  return queue<WritebackWorker>(info.Env(), i32(info[0]), i64(info[1]), i64(info[2]));
}

Napi::Value Sendfile(const Napi::CallbackInfo& info) {
  return queue<SendfileWorker>(info.Env(), i32(info[0]), i32(info[1]), i64(info[2]), i64(info[3]), i32(info[4]));
}

Napi::Value CopyFileRange(const Napi::CallbackInfo& info) {
  return queue<CopyRangeWorker>(info.Env(), i32(info[0]), i64(info[1]), i32(info[2]), i64(info[3]), i64(info[4]));
}

Napi::Value Seek(const Napi::CallbackInfo& info, int whence, const char* name) {
  const off_t r = ::lseek(i32(info[0]), static_cast<off_t>(i64(info[1])), whence);
  if (r < 0 && errno == ENXIO) return Napi::Number::New(info.Env(), -1);
  if (r < 0) throw errno_error(info.Env(), errno, name);
  return Napi::Number::New(info.Env(), static_cast<double>(r));
}

Napi::Value SeekData(const Napi::CallbackInfo& info) { return Seek(info, SEEK_DATA, "lseek(SEEK_DATA)"); }
Napi::Value SeekHole(const Napi::CallbackInfo& info) { return Seek(info, SEEK_HOLE, "lseek(SEEK_HOLE)"); }

Napi::Value PunchHole(const Napi::CallbackInfo& info) {
  const int mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
  if (::fallocate(i32(info[0]), mode, i64(info[1]), i64(info[2])) != 0) {
    throw errno_error(info.Env(), errno, "fallocate");
  }
  return info.Env().Undefined();
}

Napi::Value Fadvise(const Napi::CallbackInfo& info) {
  const int err = ::posix_fadvise(i32(info[0]), i64(info[1]), i64(info[2]), i32(info[3]));
  if (err != 0) throw errno_error(info.Env(), err, "posix_fadvise");
  return info.Env().Undefined();
}

#ifndef __NR_cachestat
#define __NR_cachestat 451  // the same number on every architecture (Linux 6.5+)
#endif

struct CachestatRange {
  uint64_t off, len;
};
struct Cachestat {
  uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
};

std::atomic<bool> cachestat_missing{false};

// 1 if every page of [off, off + len) is in the page cache, 0 if one is not, -1 if the kernel
// cannot say (no cachestat(2) before Linux 6.5). cachestat only looks: it starts no I/O.
int AllCached(int fd, int64_t off, size_t len) {
  if (len == 0) return 1;
  if (cachestat_missing.load(std::memory_order_relaxed)) return -1;
  CachestatRange range{static_cast<uint64_t>(off), len};
  Cachestat cs{};
  if (::syscall(__NR_cachestat, fd, &range, &cs, 0) != 0) {
    if (errno == ENOSYS) cachestat_missing.store(true, std::memory_order_relaxed);
    return -1;
  }
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const uint64_t pages = (range.off + len - 1) / page - range.off / page + 1;
  return cs.nr_cache >= pages ? 1 : 0;
}

// The whole range if every byte of it is in the page cache, else nothing (-1), without waiting
// for the disk. cachestat(2) answers first where the kernel has it: preadv2(RWF_NOWAIT) alone
// starts readahead on a miss, and when that finishes before the kernel looks again (a fast disk,
// a preempted thread) it returns an "uncached" range after all. RWF_NOWAIT still guards the read
// itself (a page evicted in between gives EAGAIN or a short read: -1).
// Synchronous on purpose: a cached read is a memory copy, cheaper than a pool round trip; the
// caller sends what is not cached to the pool. -2 where the kernel or file system lacks it.
Napi::Value PreadCached(const Napi::CallbackInfo& info) {
  auto buf = info[1].As<Napi::Uint8Array>();
  const int fd = i32(info[0]);
  const int64_t off = i64(info[2]);
  const size_t len = static_cast<size_t>(i64(info[3]));
  if (len > buf.ByteLength()) throw Napi::RangeError::New(info.Env(), "preadCached: length exceeds the buffer");
  if (AllCached(fd, off, len) == 0) return Napi::Number::New(info.Env(), -1);
  iovec v{buf.Data(), len};
  for (;;) {
    const ssize_t n = ::preadv2(fd, &v, 1, static_cast<off_t>(off), RWF_NOWAIT);
    if (n >= 0) return Napi::Number::New(info.Env(), static_cast<size_t>(n) == len ? static_cast<double>(n) : -1);
    if (errno == EINTR) continue;
    if (errno == EAGAIN) return Napi::Number::New(info.Env(), -1);
    if (errno == EOPNOTSUPP || errno == EINVAL || errno == ENOSYS) return Napi::Number::New(info.Env(), -2);
    throw errno_error(info.Env(), errno, "preadv2");
  }
}

// Bytes from the start of a buffer to its first `align`-aligned address (align a power of two),
// so that JavaScript can cut an O_DIRECT-able view out of an ordinary, slightly larger Buffer.
// V8 never moves an ArrayBuffer's backing store, so the offset stays valid.
Napi::Value AlignmentOffset(const Napi::CallbackInfo& info) {
  const auto buf = info[0].As<Napi::Uint8Array>();
  const uint64_t align = static_cast<uint64_t>(i64(info[1]));
  const auto addr = reinterpret_cast<uintptr_t>(buf.Data());
  return Napi::Number::New(info.Env(), static_cast<double>((align - addr % align) % align));
}

// Socket tuning for long links: SO_SNDBUF / SO_RCVBUF (0 = leave the kernel's autotuning alone;
// an explicit size turns autotuning off for that direction and is capped by net.core.*mem_max)
// TCP_CONGESTION ("" = leave it) and TCP_USER_TIMEOUT (ms; 0 = leave it: how long sent data may
// go unacknowledged before the kernel drops the connection). Returns what the socket has
// afterwards: both buffer sizes
// (as the kernel reports them, i.e. doubled), the congestion control, and the smoothed RTT in
// microseconds from TCP_INFO (and the smallest RTT it has seen, where the kernel reports it). An algorithm the kernel refuses (not loaded, not allowed) is not
// an error: the returned name says what the socket kept.
Napi::Value TuneSocket(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int fd = i32(info[0]);
  const int sndbuf = i32(info[1]);
  const int rcvbuf = i32(info[2]);
  const std::string congestion = info[3].As<Napi::String>().Utf8Value();
  const unsigned user_timeout_ms = info.Length() > 4 ? static_cast<unsigned>(i32(info[4])) : 0;
  if (user_timeout_ms > 0 &&
      ::setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms, sizeof user_timeout_ms) != 0)
    throw errno_error(env, errno, "setsockopt(TCP_USER_TIMEOUT)");
  if (sndbuf > 0 && ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf) != 0)
    throw errno_error(env, errno, "setsockopt(SO_SNDBUF)");
  if (rcvbuf > 0 && ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf) != 0)
    throw errno_error(env, errno, "setsockopt(SO_RCVBUF)");
  bool congestion_set = false;
  if (!congestion.empty() && congestion.size() < 16) {
    congestion_set = ::setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, congestion.data(),
                                  static_cast<socklen_t>(congestion.size())) == 0;
  }
  int value = 0;
  socklen_t len = sizeof value;
  Napi::Object out = Napi::Object::New(env);
  if (::getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &value, &len) != 0) throw errno_error(env, errno, "getsockopt(SO_SNDBUF)");
  out.Set("sndbuf", value);
  len = sizeof value;
  if (::getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &value, &len) != 0) throw errno_error(env, errno, "getsockopt(SO_RCVBUF)");
  out.Set("rcvbuf", value);
  char name[16] = {0};
  len = sizeof name - 1;
  if (::getsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, name, &len) == 0) out.Set("congestion", std::string(name, strnlen(name, len)));
  out.Set("congestionSet", congestion_set);
  tcp_info ti{};
  len = sizeof ti;
  if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0) {
    out.Set("rttUs", static_cast<double>(ti.tcpi_rtt));
    // The smallest RTT seen: the path's own round trip, without delayed ACKs or queueing.
    if (len >= offsetof(tcp_info, tcpi_min_rtt) + sizeof ti.tcpi_min_rtt && ti.tcpi_min_rtt != ~0U)
      out.Set("minRttUs", static_cast<double>(ti.tcpi_min_rtt));
  }
  return out;
}

}  // namespace

void init_zero_copy(Napi::Env env, Napi::Object exports) {
  exports.Set("sendfile", Napi::Function::New(env, Sendfile, "sendfile"));
  exports.Set("recv", Napi::Function::New(env, Recv, "recv"));
  exports.Set("startWriteback", Napi::Function::New(env, StartWriteback, "startWriteback"));
  exports.Set("copyFileRange", Napi::Function::New(env, CopyFileRange, "copyFileRange"));
  exports.Set("seekData", Napi::Function::New(env, SeekData, "seekData"));
  exports.Set("seekHole", Napi::Function::New(env, SeekHole, "seekHole"));
  exports.Set("punchHole", Napi::Function::New(env, PunchHole, "punchHole"));
  exports.Set("fadvise", Napi::Function::New(env, Fadvise, "fadvise"));
  exports.Set("preadCached", Napi::Function::New(env, PreadCached, "preadCached"));
  exports.Set("tuneSocket", Napi::Function::New(env, TuneSocket, "tuneSocket"));
  exports.Set("alignmentOffset", Napi::Function::New(env, AlignmentOffset, "alignmentOffset"));
  Napi::Object advice = Napi::Object::New(env);
  advice.Set("normal", POSIX_FADV_NORMAL);
  advice.Set("sequential", POSIX_FADV_SEQUENTIAL);
  advice.Set("random", POSIX_FADV_RANDOM);
  advice.Set("noreuse", POSIX_FADV_NOREUSE);
  advice.Set("willneed", POSIX_FADV_WILLNEED);
  advice.Set("dontneed", POSIX_FADV_DONTNEED);
  exports.Set("fadviseAdvice", advice);
}

}  // namespace dwcp
