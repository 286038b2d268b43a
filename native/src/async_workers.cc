// Async variants of the heavy kernels. Each worker pins the caller's buffers with a persistent
// reference (no copy) and runs the kernel on the libuv pool, so several chunks are processed
// in parallel on different cores.
#include <cstring>

#include "dispatch.h"
#include "napi_util.h"

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

}  // namespace

void init_async(Napi::Env env, Napi::Object exports) {
  exports.Set("crc32cAsync", Napi::Function::New(env, Crc32cAsync, "crc32cAsync"));
  exports.Set("analyzeAsync", Napi::Function::New(env, AnalyzeAsync, "analyzeAsync"));
  exports.Set("fingerprintsAsync", Napi::Function::New(env, FingerprintsAsync, "fingerprintsAsync"));
  exports.Set("strongHashAsync", Napi::Function::New(env, StrongHashAsync, "strongHashAsync"));
}

}  // namespace dwcp
