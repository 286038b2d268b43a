// Zero detection with AVX2 (compiled with -mavx2). Four independent OR chains per step keep
// the loads flowing; vptest checks a whole register against zero.
#include <immintrin.h>

#include "kernels.h"

namespace dwcp {
namespace {

inline __m256i ld(const uint8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }

inline uint8_t tail_or(const uint8_t* p, size_t n) {
  uint8_t acc = 0;
  while (n--) acc |= *p++;
  return acc;
}

// OR of n bytes folded into one register (n is consumed in 128-byte steps, tail returned).
inline __m256i or_blocks(const uint8_t*& p, size_t& n) {
  __m256i a = _mm256_setzero_si256(), b = a, c = a, d = a;
  for (; n >= 128; n -= 128, p += 128) {
    a = _mm256_or_si256(a, ld(p));
    b = _mm256_or_si256(b, ld(p + 32));
    c = _mm256_or_si256(c, ld(p + 64));
    d = _mm256_or_si256(d, ld(p + 96));
  }
  for (; n >= 32; n -= 32, p += 32) a = _mm256_or_si256(a, ld(p));
  return _mm256_or_si256(_mm256_or_si256(a, b), _mm256_or_si256(c, d));
}

inline bool range_zero(const uint8_t* p, size_t n) {
  const __m256i acc = or_blocks(p, n);
  return _mm256_testz_si256(acc, acc) && tail_or(p, n) == 0;
}

}  // namespace

uint64_t or_reduce_avx2(const uint8_t* p, size_t n) {
  const __m256i acc = or_blocks(p, n);
  const __m128i x = _mm_or_si128(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
  const uint64_t r = static_cast<uint64_t>(_mm_cvtsi128_si64(x)) |
                     static_cast<uint64_t>(_mm_extract_epi64(x, 1));
  return r | tail_or(p, n);
}

bool is_zero_avx2(const uint8_t* p, size_t n) {
  constexpr size_t kStep = 512;  // check for an early exit every 512 bytes
  for (; n >= kStep; n -= kStep, p += kStep) {
    if (!range_zero(p, kStep)) return false;
  }
  return range_zero(p, n);
}

bool zero_pages_avx2(const uint8_t* p, size_t n, uint8_t* flags) {
  bool all = true;
  for (size_t off = 0; off < n; off += kPageSize) {
    const size_t len = n - off < kPageSize ? n - off : kPageSize;
    const bool z = range_zero(p + off, len);
    *flags++ = z ? 1 : 0;
    all = all && z;
  }
  return all;
}

}  // namespace dwcp
