// Small helpers for the N-API layer. TypeScript validates every argument before calling in, so
// these only unwrap; failures are reported as Errors carrying a `code` (an errno name such as
// "EAGAIN", or a dwcp code such as "XOR_DELTA_CORRUPT") that native/errors.ts maps to a class.
#pragma once

#include <napi.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>

namespace dwcp {

struct Span {
  uint8_t* data;
  size_t size;
};

inline Span span(const Napi::Value& v) {
  auto a = v.As<Napi::Uint8Array>();
  return {a.Data(), a.ElementLength()};
}

inline uint32_t u32(const Napi::Value& v) { return v.As<Napi::Number>().Uint32Value(); }
inline int i32(const Napi::Value& v) { return v.As<Napi::Number>().Int32Value(); }
inline int64_t i64(const Napi::Value& v) { return v.As<Napi::Number>().Int64Value(); }

Napi::Error coded_error(Napi::Env env, const char* code, const std::string& message);
Napi::Error errno_error(Napi::Env env, int err, const char* syscall);

// An AsyncWorker that settles a promise. Execute() runs on the libuv pool and must not touch
// N-API; it reports failures with Fail(errno, syscall) and OnOK turns them into rejections.
class PromiseWorker : public Napi::AsyncWorker {
 public:
  explicit PromiseWorker(Napi::Env env)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise Promise() const { return deferred_.Promise(); }

 protected:
  virtual Napi::Value Result(Napi::Env env) = 0;
  void Fail(int err, const char* syscall) {
    err_ = err;
    syscall_ = syscall;
  }
  void OnOK() override {
    if (err_ != 0) {
      deferred_.Reject(errno_error(Env(), err_, syscall_).Value());
    } else {
      deferred_.Resolve(Result(Env()));
    }
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  int err_ = 0;
  const char* syscall_ = "";
};

// Queues a worker and returns its promise. node-addon-api deletes an AsyncWorker itself once
// OnOK/OnError has run, so ownership passes to it here.
template <class W, class... A>
Napi::Promise queue(Napi::Env env, A&&... args) {
  auto w = std::make_unique<W>(env, std::forward<A>(args)...);
  Napi::Promise p = w->Promise();
  w.release()->Queue();
  return p;
}

void init_zero_copy(Napi::Env env, Napi::Object exports);
void init_async(Napi::Env env, Napi::Object exports);
void init_mapped(Napi::Env env, Napi::Object exports);
void init_beneath(Napi::Env env, Napi::Object exports);
void init_sealed(Napi::Env env, Napi::Object exports);

}  // namespace dwcp
