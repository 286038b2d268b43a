#include "dispatch.h"

namespace dwcp {
namespace {

Kernels make_scalar() {
  return Kernels{crc32c_raw_scalar,  analyze_scalar,          is_zero_scalar,    zero_pages_scalar,
                 or_reduce_scalar,   fingerprints_scalar,     xor_delta_encode_scalar,
                 xor_delta_decode_scalar, Blake3Impl::Portable, "scalar-slice8",
                 "scalar",           "scalar",                "scalar",          "blake3-portable"};
}

// __builtin_cpu_supports also checks XCR0, so AVX/AVX-512 state saving by the OS is covered.
Kernels make_simd([[maybe_unused]] bool allow_avx512) {
  Kernels k = make_scalar();
#if defined(DWCP_X86_SIMD)
  if (__builtin_cpu_supports("sse4.2") && __builtin_cpu_supports("pclmul")) {
    k.crc32c_raw = crc32c_raw_sse42;
    k.analyze = analyze_sse42;
    k.crc32c_name = "sse42-3way";
  }
  if (__builtin_cpu_supports("avx2")) {
    k.is_zero = is_zero_avx2;
    k.zero_pages = zero_pages_avx2;
    k.or_reduce = or_reduce_avx2;
    k.fingerprints = fingerprints_avx2;
    k.xor_encode = xor_delta_encode_avx2;
    k.xor_decode = xor_delta_decode_avx2;
    k.blake3 = Blake3Impl::Avx2;
    k.zero_name = k.fingerprint_name = k.xor_name = "avx2";
    k.blake3_name = "blake3-avx2";
  }
  if (!allow_avx512 || !__builtin_cpu_supports("avx512f")) return k;
  if (__builtin_cpu_supports("vpclmulqdq") && __builtin_cpu_supports("sse4.2")) {
    k.crc32c_raw = crc32c_raw_vpclmul;
    k.analyze = analyze_vpclmul;
    k.crc32c_name = "avx512-vpclmul";
  }
  if (__builtin_cpu_supports("avx512vl")) {
    k.blake3 = Blake3Impl::Avx512;
    k.blake3_name = "blake3-avx512";
  }
#endif
  return k;
}

}  // namespace

const Kernels& kernels(Tier tier) {
  static const Kernels best = make_simd(true), no_avx512 = make_simd(false), scalar = make_scalar();
  switch (tier) {
    case Tier::Scalar: return scalar;
    case Tier::NoAvx512: return no_avx512;
    case Tier::Best: break;
  }
  return best;
}

}  // namespace dwcp
