// CRC32C by carry-less folding with AVX-512 VPCLMULQDQ (compiled with -mavx512f -mvpclmulqdq
// -msse4.2). crc32 retires 8 bytes per cycle on one port, below the memory bandwidth of a
// modern core; folding 256 bytes per step on four 512-bit accumulators is not.
//
// Folding a 128-bit block X = Xlo*x^64 + Xhi (bit-reflected, first byte = highest degree)
// forward by D bits: X*x^D == clmul(Xlo, x^(D+31)) + clmul(Xhi, x^(D-33)) (mod P), where the
// constants are 32-bit reflected values in the low half of each qword (the -33/+31 absorb the
// x^32 of that placement and the x^1 of a reflected carry-less product). At the end the last
// 128-bit block X gives the raw state X*x^32 mod P = crc32_u64(crc32_u64(0, Xlo), Xhi).
#include <immintrin.h>

#include "kernels.h"

namespace dwcp {
namespace {

constexpr size_t kBlock = 256;  // bytes per step: four 512-bit accumulators

uint64_t xk(uint64_t bits) { return crc32c_xpow(bits); }

struct FoldConsts {
  __m512i k2048, k1536, k1024, k512;
  __m128i k384, k256, k128;
};

__m128i pair128(uint64_t d) { return _mm_set_epi64x(static_cast<int64_t>(xk(d - 33)), static_cast<int64_t>(xk(d + 31))); }
__m512i pair512(uint64_t d) { return _mm512_broadcast_i32x4(pair128(d)); }

const FoldConsts& consts() {
  static const FoldConsts k = {pair512(2048), pair512(1536), pair512(1024), pair512(512),
                               pair128(384),  pair128(256),  pair128(128)};
  return k;
}

inline __m512i fold(__m512i x, __m512i k, __m512i y) {
  return _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(x, k, 0x00), _mm512_clmulepi64_epi128(x, k, 0x11), y, 0x96);
}

inline __m128i fold(__m128i x, __m128i k, __m128i y) {
  return _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x00), _mm_clmulepi64_si128(x, k, 0x11)), y);
}

inline __m512i ld(const uint8_t* p) { return _mm512_loadu_si512(p); }

inline uint32_t finish(__m512i x0, __m512i x1, __m512i x2, __m512i x3) {
  const FoldConsts& k = consts();
  const __m512i x = fold(x0, k.k1536, fold(x1, k.k1024, fold(x2, k.k512, x3)));
  __m128i r = _mm512_extracti32x4_epi32(x, 3);
  r = fold(_mm512_extracti32x4_epi32(x, 2), k.k128, r);
  r = fold(_mm512_extracti32x4_epi32(x, 1), k.k256, r);
  r = fold(_mm512_extracti32x4_epi32(x, 0), k.k384, r);
  const uint64_t c = _mm_crc32_u64(0, static_cast<uint64_t>(_mm_cvtsi128_si64(r)));
  return static_cast<uint32_t>(_mm_crc32_u64(c, static_cast<uint64_t>(_mm_extract_epi64(r, 1))));
}

// Folds `blocks` (>= 1) 256-byte blocks. With kZeroMap, also writes one zero flag per 16
// blocks (a 4 KiB page); blocks must then be a multiple of 16.
template <bool kZeroMap>
uint32_t fold_blocks(uint32_t state, const uint8_t* p, size_t blocks, uint8_t* flags) {
  const __m512i k = consts().k2048;
  __m512i x0 = ld(p), x1 = ld(p + 64), x2 = ld(p + 128), x3 = ld(p + 192);
  __m512i z = _mm512_ternarylogic_epi64(x0, x1, _mm512_or_si512(x2, x3), 0xFE);
  x0 = _mm512_xor_si512(x0, _mm512_castsi128_si512(_mm_cvtsi32_si128(static_cast<int>(state))));
  for (size_t b = 1; b < blocks; ++b) {
    p += kBlock;
    if (kZeroMap && b % 16 == 0) {
      *flags++ = _mm512_test_epi64_mask(z, z) == 0;
      z = _mm512_setzero_si512();
    }
    const __m512i y0 = ld(p), y1 = ld(p + 64), y2 = ld(p + 128), y3 = ld(p + 192);
    if (kZeroMap) z = _mm512_ternarylogic_epi64(z, _mm512_or_si512(y0, y1), _mm512_or_si512(y2, y3), 0xFE);
    x0 = fold(x0, k, y0);
    x1 = fold(x1, k, y1);
    x2 = fold(x2, k, y2);
    x3 = fold(x3, k, y3);
  }
  if (kZeroMap) *flags = _mm512_test_epi64_mask(z, z) == 0;
  return finish(x0, x1, x2, x3);
}

}  // namespace

uint32_t crc32c_raw_vpclmul(uint32_t state, const uint8_t* p, size_t n) {
  if (n < 2 * kBlock) return crc32c_raw_sse42(state, p, n);
  const size_t blocks = n / kBlock;
  state = fold_blocks<false>(state, p, blocks, nullptr);
  return crc32c_raw_sse42(state, p + blocks * kBlock, n % kBlock);
}

uint32_t analyze_vpclmul(uint32_t state, const uint8_t* p, size_t n, uint8_t* flags) {
  const size_t pages = n / kPageSize;
  if (pages != 0) state = fold_blocks<true>(state, p, pages * (kPageSize / kBlock), flags);
  return analyze_sse42(state, p + pages * kPageSize, n % kPageSize, flags + pages);
}

}  // namespace dwcp
