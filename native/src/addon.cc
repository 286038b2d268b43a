// dwcp_native: synchronous kernel bindings and module init. Every kernel takes a trailing
// `scalar` flag so tests and benches can run the scalar C++ path next to the SIMD one.
#include <cstring>
#include <string>

#include "dispatch.h"
#include "napi_util.h"

namespace dwcp {

Napi::Error coded_error(Napi::Env env, const char* code, const std::string& message) {
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, code));
  return e;
}

Napi::Error errno_error(Napi::Env env, int err, const char* syscall) {
  const char* name = strerrorname_np(err);
  const std::string code = name != nullptr ? name : "E" + std::to_string(err);
  Napi::Error e = coded_error(env, code.c_str(), std::string(syscall) + ": " + std::strerror(err));
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("syscall", Napi::String::New(env, syscall));
  return e;
}

namespace {

Tier tier(const Napi::Value& v) { return static_cast<Tier>(v.As<Napi::Number>().Int32Value()); }

Napi::Value Crc32c(const Napi::CallbackInfo& info) {
  const Span b = span(info[0]);
  const uint32_t seed = u32(info[1]);
  return Napi::Number::New(info.Env(), ~kernels(tier(info[2])).crc32c_raw(~seed, b.data, b.size));
}

Napi::Value Crc32cCombine(const Napi::CallbackInfo& info) {
  const auto len = static_cast<uint64_t>(info[2].As<Napi::Number>().DoubleValue());
  return Napi::Number::New(info.Env(), crc32c_combine(u32(info[0]), u32(info[1]), len));
}

Napi::Value Crc32cZeros(const Napi::CallbackInfo& info) {
  const auto len = static_cast<uint64_t>(info[0].As<Napi::Number>().DoubleValue());
  return Napi::Number::New(info.Env(), crc32c_zeros(len, u32(info[1])));
}

Napi::Value IsZero(const Napi::CallbackInfo& info) {
  const Span b = span(info[0]);
  return Napi::Boolean::New(info.Env(), kernels(tier(info[1])).is_zero(b.data, b.size));
}

Napi::Value ZeroPages(const Napi::CallbackInfo& info) {
  const Span b = span(info[0]);
  return Napi::Boolean::New(info.Env(), kernels(tier(info[2])).zero_pages(b.data, b.size, span(info[1]).data));
}

Napi::Value OrReduce(const Napi::CallbackInfo& info) {
  const Span b = span(info[0]);
  return Napi::Boolean::New(info.Env(), kernels(tier(info[1])).or_reduce(b.data, b.size) != 0);
}

Napi::Value Analyze(const Napi::CallbackInfo& info) {
  const Span b = span(info[0]), flags = span(info[1]);
  const uint32_t crc = ~kernels(tier(info[2])).analyze(~0u, b.data, b.size, flags.data);
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("crc32c", Napi::Number::New(info.Env(), crc));
  const bool all_zero = flags.size == 0 || std::memchr(flags.data, 0, flags.size) == nullptr;
  o.Set("allZero", Napi::Boolean::New(info.Env(), all_zero));
  return o;
}

Napi::Value Fingerprints(const Napi::CallbackInfo& info) {
  const Span b = span(info[0]);
  kernels(tier(info[2])).fingerprints(b.data, b.size, reinterpret_cast<uint64_t*>(span(info[1]).data));
  return info.Env().Undefined();
}

Napi::Value StrongHash(const Napi::CallbackInfo& info) {
  const Span b = span(info[0]);
  uint8_t digest[32];
  blake3_hash(b.data, b.size, digest, kernels(tier(info[1])).blake3);
  return Napi::Buffer<uint8_t>::Copy(info.Env(), digest, 32);
}

// strongHashPages(buf, cvsOut, tier): the BLAKE3 of buf and its page chaining values (see kernels.h).
Napi::Value StrongHashPages(const Napi::CallbackInfo& info) {
  const Span b = span(info[0]);
  uint8_t digest[32];
  blake3_hash_pages(b.data, b.size, span(info[1]).data, digest, kernels(tier(info[2])).blake3);
  return Napi::Buffer<uint8_t>::Copy(info.Env(), digest, 32);
}

// pageCv(page, index, tier): the chaining value of one 4 KiB page at page index `index`.
Napi::Value PageCv(const Napi::CallbackInfo& info) {
  uint8_t cv[32];
  blake3_page_cv(span(info[0]).data, static_cast<uint64_t>(i64(info[1])), cv, kernels(tier(info[2])).blake3);
  return Napi::Buffer<uint8_t>::Copy(info.Env(), cv, 32);
}

// rootFromCvs(cvs, tier): the BLAKE3 hash of the input whose page chaining values these are.
Napi::Value RootFromCvs(const Napi::CallbackInfo& info) {
  const Span c = span(info[0]);
  uint8_t digest[32];
  blake3_root_from_cvs(c.data, c.size / 32, digest, kernels(tier(info[1])).blake3);
  return Napi::Buffer<uint8_t>::Copy(info.Env(), digest, 32);
}

Napi::Value XorDeltaBound(const Napi::CallbackInfo& info) {
  const auto n = static_cast<size_t>(info[0].As<Napi::Number>().DoubleValue());
  return Napi::Number::New(info.Env(), static_cast<double>(xor_delta_bound(n)));
}

Napi::Value XorDeltaEncode(const Napi::CallbackInfo& info) {
  const Span a = span(info[0]), b = span(info[1]), out = span(info[2]);
  const size_t n = kernels(tier(info[3])).xor_encode(a.data, b.data, a.size, out.data);
  return Napi::Number::New(info.Env(), static_cast<double>(n));
}

Napi::Value XorDeltaDecode(const Napi::CallbackInfo& info) {
  const Span old = span(info[0]), d = span(info[1]), out = span(info[2]);
  if (!kernels(tier(info[3])).xor_decode(old.data, old.size, d.data, d.size, out.data)) {
    throw coded_error(info.Env(), "XOR_DELTA_CORRUPT", "xor delta is malformed or does not match the old buffer");
  }
  return info.Env().Undefined();
}

Napi::Value Capabilities(const Napi::CallbackInfo& info) {
  const Kernels& k = kernels(tier(info[0]));
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("crc32c", k.crc32c_name);
  o.Set("zero", k.zero_name);
  o.Set("fingerprint", k.fingerprint_name);
  o.Set("strongHash", k.blake3_name);
  o.Set("xorDelta", k.xor_name);
  o.Set("zeroCopy", "sendfile+copy_file_range");
  return o;
}

void set_fn(Napi::Env env, Napi::Object exports, const char* name, Napi::Function::Callback fn) {
  exports.Set(name, Napi::Function::New(env, fn, name));
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  set_fn(env, exports, "crc32c", Crc32c);
  set_fn(env, exports, "crc32cCombine", Crc32cCombine);
  set_fn(env, exports, "crc32cZeros", Crc32cZeros);
  set_fn(env, exports, "isZero", IsZero);
  set_fn(env, exports, "zeroPages", ZeroPages);
  set_fn(env, exports, "orReduce", OrReduce);
  set_fn(env, exports, "analyze", Analyze);
  set_fn(env, exports, "fingerprints", Fingerprints);
  set_fn(env, exports, "strongHash", StrongHash);
  set_fn(env, exports, "strongHashPages", StrongHashPages);
  set_fn(env, exports, "pageCv", PageCv);
  set_fn(env, exports, "rootFromCvs", RootFromCvs);
  set_fn(env, exports, "xorDeltaBound", XorDeltaBound);
  set_fn(env, exports, "xorDeltaEncode", XorDeltaEncode);
  set_fn(env, exports, "xorDeltaDecode", XorDeltaDecode);
  set_fn(env, exports, "capabilities", Capabilities);
  init_async(env, exports);
  init_zero_copy(env, exports);
  init_mapped(env, exports);
  init_beneath(env, exports);
  init_sealed(env, exports);
  return exports;
}

}  // namespace dwcp

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return dwcp::Init(env, exports); }

NODE_API_MODULE(dwcp_native, InitModule)
