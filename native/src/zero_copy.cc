// Zero-copy syscalls. sendfile/copy_file_range run as AsyncWorkers on the libuv pool (see
// native/README.md, "Threading"); the lseek/fallocate/fadvise helpers are quick metadata calls
// and stay synchronous.
#include <fcntl.h>
#include <poll.h>
#include <sys/sendfile.h>
#include <unistd.h>

#include <cerrno>
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

}  // namespace

void init_zero_copy(Napi::Env env, Napi::Object exports) {
  exports.Set("sendfile", Napi::Function::New(env, Sendfile, "sendfile"));
  exports.Set("copyFileRange", Napi::Function::New(env, CopyFileRange, "copyFileRange"));
  exports.Set("seekData", Napi::Function::New(env, SeekData, "seekData"));
  exports.Set("seekHole", Napi::Function::New(env, SeekHole, "seekHole"));
  exports.Set("punchHole", Napi::Function::New(env, PunchHole, "punchHole"));
  exports.Set("fadvise", Napi::Function::New(env, Fadvise, "fadvise"));
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
