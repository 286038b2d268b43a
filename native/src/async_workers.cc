// Async variants of the heavy kernels. Each worker pins the caller's buffers with a persistent
// reference (no copy) and runs the kernel on the libuv pool, so several chunks are processed
// in parallel on different cores.
#include <cstdlib>
#include <cstring>

#include "dispatch.h"
#include "napi_util.h"
#include "zstd_codec.h"

namespace dwcp {
namespace {

// Holds a reference to a Uint8Array so its memory stays alive while the worker runs.
class Pinned {
 public:
  explicit Pinned(const Napi::Value& v) : ref_(Napi::Persistent(v.As<Napi::Object>())), span_(span(v)) {}
  uint8_t* data() const { return span_.data; }
  size_t size() const { return span_.size; }

 private:
  Napi::ObjectReference ref_;
  Span span_;
};

class Crc32cWorker final : public PromiseWorker {
 public:
  Crc32cWorker(Napi::Env env, const Napi::Value& buf, uint32_t seed)
      : PromiseWorker(env), buf_(buf), crc_(seed) {}
  void Execute() override { crc_ = ~best_kernels().crc32c_raw(~crc_, buf_.data(), buf_.size()); }
  Napi::Value Result(Napi::Env env) override { return Napi::Number::New(env, crc_); }

 private:
  Pinned buf_;
  uint32_t crc_;
};

class AnalyzeWorker final : public PromiseWorker {
 public:
  AnalyzeWorker(Napi::Env env, const Napi::Value& buf, const Napi::Value& flags)
      : PromiseWorker(env), buf_(buf), flags_(flags) {}
  void Execute() override {
    crc_ = ~best_kernels().analyze(~0u, buf_.data(), buf_.size(), flags_.data());
    all_zero_ = flags_.size() == 0 || std::memchr(flags_.data(), 0, flags_.size()) == nullptr;
  }
  Napi::Value Result(Napi::Env env) override {
    Napi::Object o = Napi::Object::New(env);
    o.Set("crc32c", Napi::Number::New(env, crc_));
    o.Set("allZero", Napi::Boolean::New(env, all_zero_));
    return o;
  }

 private:
  Pinned buf_, flags_;
  uint32_t crc_ = 0;
  bool all_zero_ = false;
};

class FingerprintsWorker final : public PromiseWorker {
 public:
  FingerprintsWorker(Napi::Env env, const Napi::Value& buf, const Napi::Value& out)
      : PromiseWorker(env), buf_(buf), out_(out) {}
  void Execute() override {
    best_kernels().fingerprints(buf_.data(), buf_.size(), reinterpret_cast<uint64_t*>(out_.data()));
  }
  Napi::Value Result(Napi::Env env) override { return env.Undefined(); }

 private:
  Pinned buf_, out_;
};

class StrongHashWorker final : public PromiseWorker {
 public:
  StrongHashWorker(Napi::Env env, const Napi::Value& buf) : PromiseWorker(env), buf_(buf) {}
  void Execute() override { blake3_hash(buf_.data(), buf_.size(), digest_, best_kernels().blake3); }
  Napi::Value Result(Napi::Env env) override { return Napi::Buffer<uint8_t>::Copy(env, digest_, 32); }

 private:
  Pinned buf_;
  uint8_t digest_[32] = {};
};

// zstd of one chunk's bytes into a buffer of its own (malloc'd here, freed with the Buffer).
// Resolves to null when zstd fails (the caller then sends the bytes as they are).
class ZstdPackWorker final : public PromiseWorker {
 public:
  ZstdPackWorker(Napi::Env env, const Napi::Value& buf, int level) : PromiseWorker(env), buf_(buf), level_(level) {}
  ~ZstdPackWorker() override { std::free(out_); }
  void Execute() override {
    const size_t cap = zstd_bound(buf_.size());
    out_ = static_cast<uint8_t*>(std::malloc(cap));
    if (out_ != nullptr) size_ = zstd_pack(buf_.data(), buf_.size(), out_, cap, level_);
  }
  Napi::Value Result(Napi::Env env) override {
    if (out_ == nullptr || size_ == 0) return env.Null();
    uint8_t* out = out_;
    out_ = nullptr;
    return Napi::Buffer<uint8_t>::New(env, out, size_, [](Napi::Env, uint8_t* p) { std::free(p); });
  }

 private:
  Pinned buf_;
  int level_;
  uint8_t* out_ = nullptr;
  size_t size_ = 0;
};

// Decodes one zstd frame into `out`, whose length is the chunk's raw length: the frame must
// declare exactly that many bytes, and the decoder has no more room than that.
class ZstdUnpackWorker final : public PromiseWorker {
 public:
  ZstdUnpackWorker(Napi::Env env, const Napi::Value& packed, const Napi::Value& out)
      : PromiseWorker(env), packed_(packed), out_(out) {}
  void Execute() override {
    const ZstdUnpack r = zstd_unpack(packed_.data(), packed_.size(), out_.data(), out_.size());
    if (r != ZstdUnpack::Ok) SetError(zstd_unpack_reason(r));
  }
  Napi::Value Result(Napi::Env env) override { return env.Undefined(); }

 private:
  Pinned packed_, out_;
};

Napi::Value Crc32cAsync(const Napi::CallbackInfo& info) {
  return queue<Crc32cWorker>(info.Env(), info[0], u32(info[1]));
}
Napi::Value AnalyzeAsync(const Napi::CallbackInfo& info) {
  return queue<AnalyzeWorker>(info.Env(), info[0], info[1]);
}
Napi::Value FingerprintsAsync(const Napi::CallbackInfo& info) {
  return queue<FingerprintsWorker>(info.Env(), info[0], info[1]);
}
Napi::Value StrongHashAsync(const Napi::CallbackInfo& info) {
  return queue<StrongHashWorker>(info.Env(), info[0]);
}

Napi::Value ZstdPackAsync(const Napi::CallbackInfo& info) {
  return queue<ZstdPackWorker>(info.Env(), info[0], i32(info[1]));
}
Napi::Value ZstdUnpackAsync(const Napi::CallbackInfo& info) {
  return queue<ZstdUnpackWorker>(info.Env(), info[0], info[1]);
}

}  // namespace

void init_async(Napi::Env env, Napi::Object exports) {
  exports.Set("crc32cAsync", Napi::Function::New(env, Crc32cAsync, "crc32cAsync"));
  exports.Set("analyzeAsync", Napi::Function::New(env, AnalyzeAsync, "analyzeAsync"));
  exports.Set("fingerprintsAsync", Napi::Function::New(env, FingerprintsAsync, "fingerprintsAsync"));
  exports.Set("strongHashAsync", Napi::Function::New(env, StrongHashAsync, "strongHashAsync"));
  exports.Set("zstdPackAsync", Napi::Function::New(env, ZstdPackAsync, "zstdPackAsync"));
  exports.Set("zstdUnpackAsync", Napi::Function::New(env, ZstdUnpackAsync, "zstdUnpackAsync"));
}

}  // namespace dwcp
