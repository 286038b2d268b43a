// Sealed records for the data channel: AES-128-GCM through OpenSSL's EVP, under keys the TLS
// session exported (see services/common/secure-link/sealed.ts for the protocol). Everything
// runs as AsyncWorkers on the libuv pool: the sealing sender encrypts its parts in place and
// writes them to the socket fd with writev; the opening receiver recv()s one record straight
// into the caller's buffer and decrypts it there. The event loop touches no bulk byte.
//
// A record is a 32-byte header and the ciphertext:
//   0 u8 type (0xD5)  1..3 zero  4 u32 length  8 u64 counter  16..31 GCM tag
// big-endian; AAD = header bytes 0..15; nonce = iv XOR (0^4 || counter).
#include <openssl/evp.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "napi_util.h"

namespace dwcp {
namespace {

constexpr uint8_t kRecordType = 0xD5;
constexpr size_t kHeader = 32;
constexpr size_t kAad = 16;
constexpr size_t kKey = 16;
constexpr size_t kIv = 12;
constexpr int kSliceMs = 50;

void put_be(uint8_t* p, uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i, v >>= 8) p[i] = static_cast<uint8_t>(v);
}
uint64_t get_be(const uint8_t* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v = (v << 8) | p[i];
  return v;
}

struct CtxFree {
  void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
};
using Ctx = std::unique_ptr<EVP_CIPHER_CTX, CtxFree>;

struct Keys {
  uint8_t key[kKey];
  uint8_t iv[kIv];
};

Keys keys_of(const Napi::Value& key, const Napi::Value& iv) {
  Keys k{};
  std::memcpy(k.key, span(key).data, kKey);
  std::memcpy(k.iv, span(iv).data, kIv);
  return k;
}

void nonce_of(const Keys& k, uint64_t counter, uint8_t* nonce) {
  std::memcpy(nonce, k.iv, kIv);
  for (int i = 0; i < 8; ++i) nonce[kIv - 1 - i] ^= static_cast<uint8_t>(counter >> (8 * i));
}

void header_of(uint8_t* h, uint32_t length, uint64_t counter) {
  std::memset(h, 0, kHeader);
  h[0] = kRecordType;
  put_be(h + 4, length, 4);
  put_be(h + 8, counter, 8);
}

// Seals data[0, len) in place; writes the tag into header[16, 32). False on an OpenSSL failure.
bool seal(const Keys& k, uint64_t counter, uint8_t* header, uint8_t* data, size_t len) {
  Ctx ctx(EVP_CIPHER_CTX_new());
  uint8_t nonce[kIv];
  nonce_of(k, counter, nonce);
  int out = 0;
  if (!ctx || EVP_EncryptInit_ex(ctx.get(), EVP_aes_128_gcm(), nullptr, k.key, nonce) != 1) return false;
  if (EVP_EncryptUpdate(ctx.get(), nullptr, &out, header, kAad) != 1) return false;
  if (len > 0 && EVP_EncryptUpdate(ctx.get(), data, &out, data, static_cast<int>(len)) != 1) return false;
  if (EVP_EncryptFinal_ex(ctx.get(), data + len, &out) != 1) return false;
  return EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, 16, header + kAad) == 1;
}

// Opens data[0, len) in place against header's AAD and tag. False if the tag does not match
// (the plaintext left in `data` must then not be used: the caller discards the record).
bool open(const Keys& k, uint64_t counter, const uint8_t* header, uint8_t* data, size_t len) {
  Ctx ctx(EVP_CIPHER_CTX_new());
  uint8_t nonce[kIv];
  nonce_of(k, counter, nonce);
  uint8_t tag[16];
  std::memcpy(tag, header + kAad, sizeof tag);
  int out = 0;
  if (!ctx || EVP_DecryptInit_ex(ctx.get(), EVP_aes_128_gcm(), nullptr, k.key, nonce) != 1) return false;
  if (EVP_DecryptUpdate(ctx.get(), nullptr, &out, header, kAad) != 1) return false;
  if (len > 0 && EVP_DecryptUpdate(ctx.get(), data, &out, data, static_cast<int>(len)) != 1) return false;
  if (EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, 16, tag) != 1) return false;
  return EVP_DecryptFinal_ex(ctx.get(), data + len, &out) == 1;
}

// A PromiseWorker that can also fail with a dwcp code (a record that is not what it must be).
class SealedWorker : public PromiseWorker {
 public:
  using PromiseWorker::PromiseWorker;

 protected:
  void Refuse(const char* code, const char* message) {
    code_ = code;
    message_ = message;
  }
  void OnOK() override {
    if (code_ != nullptr) {
      OnError(coded_error(Env(), code_, message_));
      return;
    }
    PromiseWorker::OnOK();
  }

 private:
  const char* code_ = nullptr;
  const char* message_ = "";
};

// Pinned Uint8Array parts: each becomes one record, sealed in place, then all are written with
// writev (partial writes resumed; a non-blocking socket waits for POLLOUT in short slices,
// checking the cancel flag). Resolves to the bytes written.
class SealSendWorker final : public SealedWorker {
 public:
  SealSendWorker(Napi::Env env, int fd, Keys keys, uint64_t counter, Napi::Array parts, int timeout_ms,
                 Napi::Int32Array cancel)
      : SealedWorker(env),
        fd_(fd),
        keys_(keys),
        counter_(counter),
        timeout_(timeout_ms),
        cancel_(cancel.Data()),
        parts_ref_(Napi::Persistent(parts.As<Napi::Object>())),
        cancel_ref_(Napi::Persistent(cancel)) {
    const uint32_t n = parts.Length();
    for (uint32_t i = 0; i < n; ++i) spans_.push_back(span(parts.Get(i)));
    headers_.resize(n * kHeader);
  }

  void Execute() override {
    std::vector<iovec> iov;
    for (size_t i = 0; i < spans_.size(); ++i) {
      uint8_t* h = headers_.data() + i * kHeader;
      header_of(h, static_cast<uint32_t>(spans_[i].size), counter_ + i);
      if (!seal(keys_, counter_ + i, h, spans_[i].data, spans_[i].size))
        return Refuse("SEALED_CRYPTO", "AES-GCM sealing failed in OpenSSL");
      iov.push_back({h, kHeader});
      if (spans_[i].size > 0) iov.push_back({spans_[i].data, spans_[i].size});
    }
    size_t at = 0;
    int waited = 0;
    while (at < iov.size()) {
      if (__atomic_load_n(cancel_, __ATOMIC_ACQUIRE) != 0) return Fail(ECANCELED, "writev");
      const int count = static_cast<int>(std::min<size_t>(iov.size() - at, IOV_MAX));
      const ssize_t n = ::writev(fd_, iov.data() + at, count);
      if (n >= 0) {
        sent_ += n;
        waited = 0;
        size_t left = static_cast<size_t>(n);
        while (at < iov.size() && left >= iov[at].iov_len) left -= iov[at++].iov_len;
        if (left > 0) {
          iov[at].iov_base = static_cast<uint8_t*>(iov[at].iov_base) + left;
          iov[at].iov_len -= left;
        }
      } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
        pollfd p{fd_, POLLOUT, 0};
        const int r = ::poll(&p, 1, kSliceMs);
        if (r == 0 && (waited += kSliceMs) >= timeout_) return Fail(ETIMEDOUT, "writev");
        if (r < 0 && errno != EINTR) return Fail(errno, "poll");
      } else if (errno != EINTR) {
        return Fail(errno, "writev");
      }
    }
  }
  Napi::Value Result(Napi::Env env) override { return Napi::Number::New(env, static_cast<double>(sent_)); }

 private:
  int fd_;
  Keys keys_;
  uint64_t counter_;
  int timeout_;
  int32_t* cancel_;
  std::vector<Span> spans_;
  std::vector<uint8_t> headers_;
  int64_t sent_ = 0;
  Napi::ObjectReference parts_ref_;
  Napi::Reference<Napi::Int32Array> cancel_ref_;
};

// One record from the socket: its header into `header`, its ciphertext straight into
// buf[offset, offset + length) (length <= capacity, else SEALED_TOO_LONG), opened in place.
// Resolves to the plaintext length, or -1 at a clean EOF before the record. The counter in the
// header must be the expected one (SEALED_ORDER: a replayed, dropped or reordered record), the
// tag must match (SEALED_TAG). On any refusal the buffer's bytes must not be used.
// With a `progress` array (header bytes, body bytes received so far) and stall_ms > 0, nothing
// arriving for stall_ms resolves to -2 with the progress saved: a peer gone quiet inside a record
// (a cut link) does not hold a pool thread; the caller waits for the socket on its event loop and
// calls again with the same arguments to continue the record.
class RecvOpenWorker final : public SealedWorker {
 public:
  RecvOpenWorker(Napi::Env env, int fd, Keys keys, uint64_t counter, Napi::Uint8Array header, Napi::Uint8Array buf,
                 int64_t offset, int64_t capacity, int timeout_ms, Napi::Int32Array cancel, Napi::Int32Array progress,
                 int stall_ms)
      : SealedWorker(env),
        fd_(fd),
        keys_(keys),
        counter_(counter),
        header_(header.Data()),
        data_(buf.Data() + offset),
        capacity_(capacity),
        timeout_(timeout_ms),
        stall_(progress.IsEmpty() ? 0 : stall_ms),
        cancel_(cancel.Data()),
        progress_(progress.IsEmpty() ? nullptr : progress.Data()),
        header_ref_(Napi::Persistent(header)),
        buf_ref_(Napi::Persistent(buf)),
        cancel_ref_(Napi::Persistent(cancel)) {
    if (!progress.IsEmpty()) progress_ref_ = Napi::Persistent(progress);
  }

  void Execute() override {
    const int64_t head = progress_ != nullptr ? progress_[0] : 0;
    const int64_t had = progress_ != nullptr ? progress_[1] : 0;
    Save(0, 0);
    const int64_t got = head < static_cast<int64_t>(kHeader) ? ReadFully(header_, kHeader, head) : head;
    if (got < 0) return;
    if (stalled_) return Save(got, 0);
    if (got == 0) {
      length_ = -1;
      return;
    }
    if (got < static_cast<int64_t>(kHeader)) return Refuse("SEALED_TRUNCATED", "connection closed inside a record");
    if (header_[0] != kRecordType || header_[1] != 0 || header_[2] != 0 || header_[3] != 0)
      return Refuse("SEALED_HEADER", "not a sealed record");
    const uint64_t length = get_be(header_ + 4, 4);
    if (get_be(header_ + 8, 8) != counter_)
      return Refuse("SEALED_ORDER", "record out of order: replayed, dropped or reordered");
    if (length == 0 || static_cast<int64_t>(length) > capacity_)
      return Refuse("SEALED_TOO_LONG", "record length outside what the reader expects");
    const int64_t body = ReadFully(data_, length, had);
    if (body < 0) return;
    if (stalled_) return Save(kHeader, body);
    if (body < static_cast<int64_t>(length)) return Refuse("SEALED_TRUNCATED", "connection closed inside a record");
    if (!open(keys_, counter_, header_, data_, length)) {
      std::memset(data_, 0, length);  // no unauthenticated byte stays where a caller could read it
      return Refuse("SEALED_TAG", "record failed authentication: altered in transit or not from the peer");
    }
    length_ = static_cast<int64_t>(length);
  }
  Napi::Value Result(Napi::Env env) override {
    return Napi::Number::New(env, static_cast<double>(stalled_ ? -2 : length_));
  }

 private:
  void Save(int64_t head, int64_t body) {
    if (progress_ == nullptr) return;
    progress_[0] = static_cast<int32_t>(head);
    progress_[1] = static_cast<int32_t>(body);
  }

  // recv() from byte `got` until `want` bytes, EOF (returns fewer), a stall (sets stalled_,
  // returns the count) or a failure (returns -1 after Fail).
  int64_t ReadFully(uint8_t* into, uint64_t want, int64_t from) {
    uint64_t got = static_cast<uint64_t>(from);
    int waited = 0;
    const int slice = stall_ > 0 && stall_ < kSliceMs ? stall_ : kSliceMs;
    while (got < want) {
      if (__atomic_load_n(cancel_, __ATOMIC_ACQUIRE) != 0) return Fail(ECANCELED, "recv"), -1;
      const ssize_t n = ::recv(fd_, into + got, static_cast<size_t>(want - got), MSG_DONTWAIT);
      if (n > 0) {
        got += static_cast<uint64_t>(n);
        waited = 0;
      } else if (n == 0) {
        break;
      } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
        pollfd p{fd_, POLLIN, 0};
        const int r = ::poll(&p, 1, slice);
        if (r == 0) waited += slice;
        if (r == 0 && waited >= timeout_) return Fail(ETIMEDOUT, "recv"), -1;
        if (r == 0 && stall_ > 0 && waited >= stall_) {
          stalled_ = true;
          break;
        }
        if (r < 0 && errno != EINTR) return Fail(errno, "poll"), -1;
      } else if (errno != EINTR) {
        return Fail(errno, "recv"), -1;
      }
    }
    return static_cast<int64_t>(got);
  }

  int fd_;
  Keys keys_;
  uint64_t counter_;
  uint8_t* header_;
  uint8_t* data_;
  int64_t capacity_;
  int timeout_;
  int stall_;
  int32_t* cancel_;
  int32_t* progress_;
  int64_t length_ = 0;
  bool stalled_ = false;
  Napi::Reference<Napi::Uint8Array> header_ref_, buf_ref_;
  Napi::Reference<Napi::Int32Array> cancel_ref_, progress_ref_;
};

// Buffer-only seal/open for tests and the fuzzer's peers: (key, iv, counter, header(32), data).
class SealBufferWorker final : public SealedWorker {
 public:
  SealBufferWorker(Napi::Env env, Keys keys, uint64_t counter, const Napi::Value& header, const Napi::Value& data,
                   bool opening)
      : SealedWorker(env),
        keys_(keys),
        counter_(counter),
        header_(span(header)),
        data_(span(data)),
        opening_(opening),
        refs_{Napi::Persistent(header.As<Napi::Object>()), Napi::Persistent(data.As<Napi::Object>())} {}
  void Execute() override {
    if (opening_) {
      if (get_be(header_.data + 8, 8) != counter_) return Refuse("SEALED_ORDER", "record out of order");
      if (!open(keys_, counter_, header_.data, data_.data, data_.size)) {
        std::memset(data_.data, 0, data_.size);
        return Refuse("SEALED_TAG", "record failed authentication");
      }
      return;
    }
    header_of(header_.data, static_cast<uint32_t>(data_.size), counter_);
    if (!seal(keys_, counter_, header_.data, data_.data, data_.size))
      Refuse("SEALED_CRYPTO", "AES-GCM sealing failed in OpenSSL");
  }
  Napi::Value Result(Napi::Env env) override { return env.Undefined(); }

 private:
  Keys keys_;
  uint64_t counter_;
  Span header_, data_;
  bool opening_;
  Napi::ObjectReference refs_[2];
};

uint64_t counter_of(const Napi::Value& v) {
  bool lossless = false;
  return v.As<Napi::BigInt>().Uint64Value(&lossless);
}

Napi::Value SealSend(const Napi::CallbackInfo& info) {
  return queue<SealSendWorker>(info.Env(), i32(info[0]), keys_of(info[1], info[2]), counter_of(info[3]),
                               info[4].As<Napi::Array>(), i32(info[5]), info[6].As<Napi::Int32Array>());
}

Napi::Value RecvOpen(const Napi::CallbackInfo& info) {
  return queue<RecvOpenWorker>(info.Env(), i32(info[0]), keys_of(info[1], info[2]), counter_of(info[3]),
                               info[4].As<Napi::Uint8Array>(), info[5].As<Napi::Uint8Array>(), i64(info[6]),
                               i64(info[7]), i32(info[8]), info[9].As<Napi::Int32Array>(),
                               info.Length() > 11 ? info[10].As<Napi::Int32Array>() : Napi::Int32Array(),
                               info.Length() > 11 ? i32(info[11]) : 0);
}

Napi::Value SealBuffer(const Napi::CallbackInfo& info) {
  return queue<SealBufferWorker>(info.Env(), keys_of(info[0], info[1]), counter_of(info[2]), info[3], info[4],
                                 info[5].As<Napi::Boolean>().Value());
}

// Whether a socket has something to read (or an EOF or error to report), without waiting: lets
// a reader wait for the next batch on a timer instead of holding a pool thread in poll().
Napi::Value Readable(const Napi::CallbackInfo& info) {
  pollfd p{i32(info[0]), POLLIN, 0};
  const int r = ::poll(&p, 1, 0);
  if (r < 0 && errno != EINTR) throw errno_error(info.Env(), errno, "poll");
  return Napi::Boolean::New(info.Env(), r > 0);
}

// A tunnel's pump: one direction of a tunnel carried as sealed records by a thread of its own
// (a tunnel lives as long as a live migration and sits idle at times: it must not hold a libuv
// pool thread). Sealing, it reads what the local socket `from` has (at most kPumpRecord), seals
// it as one record and writes it to the link `to`; at `from`'s EOF it writes an empty record,
// the authenticated end of the stream, and stops. Opening, it reads the link `from` greedily,
// opens each whole record in place and writes its plaintext to the local socket `to`; it stops at
// the empty record, and an EOF before it is SEALED_TRUNCATED (a cut is never taken for the end).
// Every wait is a poll in kSliceMs slices that checks `cancel`; a write, or the rest of a record
// begun, that makes no progress for timeout_ms is ETIMEDOUT. Waiting for the next record or for
// local bytes never times out: a tunnel may be quiet for as long as its peers are. The thread
// works on duplicates of the two fds, closed when it ends: Node closing a socket under it (an
// error destroys one at once) cannot hand the fd's number to an unrelated file meanwhile.
constexpr size_t kPumpRecord = 1 << 20;

struct PumpJob;
void pump_done(Napi::Env env, Napi::Function, PumpJob* job, void*);
using PumpTsfn = Napi::TypedThreadSafeFunction<PumpJob, void, pump_done>;

struct PumpJob {
  // Takes ownership of `from` and `to` (the duplicates Pump made).
  PumpJob(Napi::Env env, int from, int to, Keys keys, bool opening, int timeout, Napi::Int32Array cancel)
      : from_(from),
        to_(to),
        keys_(keys),
        opening_(opening),
        timeout_(timeout),
        cancel_(cancel.Data()),
        deferred_(Napi::Promise::Deferred::New(env)),
        cancel_ref_(Napi::Persistent(cancel)) {}
  ~PumpJob() {
    ::close(from_);
    ::close(to_);
  }

  int from_, to_;
  Keys keys_;
  bool opening_;
  int timeout_;
  int32_t* cancel_;
  Napi::Promise::Deferred deferred_;
  Napi::Reference<Napi::Int32Array> cancel_ref_;
  PumpTsfn tsfn_;
  std::thread thread_;
  uint64_t counter_ = 0;
  int64_t bytes_ = 0;
  int err_ = 0;
  const char* syscall_ = "";
  const char* code_ = nullptr;
  const char* message_ = "";

  bool cancelled() const { return __atomic_load_n(cancel_, __ATOMIC_ACQUIRE) != 0; }
  bool Fail(int err, const char* syscall) {
    err_ = err;
    syscall_ = syscall;
    return false;
  }
  bool Refuse(const char* code, const char* message) {
    code_ = code;
    message_ = message;
    return false;
  }

  // Waits up to one slice for `events` on fd; false (with the failure recorded) on cancel or error.
  bool Wait(int fd, short events, int* waited, bool timed) {
    if (cancelled()) return Fail(ECANCELED, "poll");
    pollfd p{fd, events, 0};
    const int r = ::poll(&p, 1, kSliceMs);
    if (r < 0 && errno != EINTR) return Fail(errno, "poll");
    if (r == 0 && timed && (*waited += kSliceMs) >= timeout_) return Fail(ETIMEDOUT, "poll");
    if (r > 0) *waited = 0;
    return true;
  }

  bool WriteAll(const uint8_t* p, size_t len) {
    int waited = 0;
    while (len > 0) {
      if (cancelled()) return Fail(ECANCELED, "send");
      const ssize_t n = ::send(to_, p, len, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n > 0) {
        p += n;
        len -= static_cast<size_t>(n);
        waited = 0;
      } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        if (!Wait(to_, POLLOUT, &waited, true)) return false;
      } else if (n < 0 && errno != EINTR) {
        return Fail(errno, "send");
      }
    }
    return true;
  }

  void Seal() {
    std::vector<uint8_t> buf(kHeader + kPumpRecord);
    int idle = 0;
    for (;;) {
      if (cancelled()) return void(Fail(ECANCELED, "recv"));
      const ssize_t n = ::recv(from_, buf.data() + kHeader, kPumpRecord, MSG_DONTWAIT);
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        if (!Wait(from_, POLLIN, &idle, false)) return;
        continue;
      }
      if (n < 0) return void(Fail(errno, "recv"));
      const size_t len = static_cast<size_t>(n);
      header_of(buf.data(), static_cast<uint32_t>(len), counter_);
      if (!seal(keys_, counter_, buf.data(), buf.data() + kHeader, len))
        return void(Refuse("SEALED_CRYPTO", "AES-GCM sealing failed in OpenSSL"));
      if (!WriteAll(buf.data(), kHeader + len)) return;
      counter_ += 1;
      bytes_ += n;
      if (n == 0) return;  // the end record is out
    }
  }

  void Open() {
    std::vector<uint8_t> buf(2 * (kHeader + kPumpRecord));
    size_t have = 0;
    int waited = 0;
    for (;;) {
      size_t at = 0;
      while (have - at >= kHeader) {
        uint8_t* h = buf.data() + at;
        if (h[0] != kRecordType || h[1] != 0 || h[2] != 0 || h[3] != 0)
          return void(Refuse("SEALED_HEADER", "not a sealed record"));
        if (get_be(h + 8, 8) != counter_)
          return void(Refuse("SEALED_ORDER", "record out of order: replayed, dropped or reordered"));
        const size_t len = get_be(h + 4, 4);
        if (len > kPumpRecord) return void(Refuse("SEALED_TOO_LONG", "record longer than a tunnel's records"));
        if (have - at < kHeader + len) break;
        if (!open(keys_, counter_, h, h + kHeader, len)) {
          std::memset(h + kHeader, 0, len);
          return void(Refuse("SEALED_TAG", "record failed authentication: altered in transit or not from the peer"));
        }
        counter_ += 1;
        if (len == 0) return;  // the authenticated end
        if (!WriteAll(h + kHeader, len)) return;
        bytes_ += static_cast<int64_t>(len);
        at += kHeader + len;
      }
      if (at > 0) {
        std::memmove(buf.data(), buf.data() + at, have - at);
        have -= at;
      }
      if (cancelled()) return void(Fail(ECANCELED, "recv"));
      const ssize_t n = ::recv(from_, buf.data() + have, buf.size() - have, MSG_DONTWAIT);
      if (n > 0) {
        have += static_cast<size_t>(n);
        waited = 0;
      } else if (n == 0) {
        return void(Refuse("SEALED_TRUNCATED", "the link closed before the tunnel's end record"));
      } else if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
        // Between records the peer may be quiet for as long as it likes; inside one, not.
        if (!Wait(from_, POLLIN, &waited, have > 0)) return;
      } else {
        return void(Fail(errno, "recv"));
      }
    }
  }
};

void pump_done(Napi::Env env, Napi::Function, PumpJob* job, void*) {
  job->thread_.join();
  if (env != nullptr) {
    if (job->code_ != nullptr)
      job->deferred_.Reject(coded_error(env, job->code_, job->message_).Value());
    else if (job->err_ != 0)
      job->deferred_.Reject(errno_error(env, job->err_, job->syscall_).Value());
    else
      job->deferred_.Resolve(Napi::Number::New(env, static_cast<double>(job->bytes_)));
  }
  delete job;
}

// pump(from, to, key, iv, opening, timeoutMs, cancel): resolves to the plaintext bytes carried.
Napi::Value Pump(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int from = ::fcntl(i32(info[0]), F_DUPFD_CLOEXEC, 0);
  if (from < 0) throw errno_error(env, errno, "fcntl");
  const int to = ::fcntl(i32(info[1]), F_DUPFD_CLOEXEC, 0);
  if (to < 0) {
    const int err = errno;
    ::close(from);
    throw errno_error(env, err, "fcntl");
  }
  auto* job = new PumpJob(env, from, to, keys_of(info[2], info[3]), info[4].As<Napi::Boolean>().Value(), i32(info[5]),
                          info[6].As<Napi::Int32Array>());
  Napi::Promise promise = job->deferred_.Promise();
  job->tsfn_ = PumpTsfn::New(env, "dwcp-sealed-pump", 0, 1, job);
  job->thread_ = std::thread([job] {
    if (job->opening_)
      job->Open();
    else
      job->Seal();
    job->tsfn_.BlockingCall();
    job->tsfn_.Release();
  });
  return promise;
}

}  // namespace

void init_sealed(Napi::Env env, Napi::Object exports) {
  exports.Set("sealSend", Napi::Function::New(env, SealSend, "sealSend"));
  exports.Set("recvOpen", Napi::Function::New(env, RecvOpen, "recvOpen"));
  exports.Set("sealBuffer", Napi::Function::New(env, SealBuffer, "sealBuffer"));
  exports.Set("readable", Napi::Function::New(env, Readable, "readable"));
  exports.Set("pump", Napi::Function::New(env, Pump, "pump"));
}

}  // namespace dwcp
