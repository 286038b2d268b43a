// Page fingerprints with AVX2 (compiled with -mavx2): the four accumulators are the four u64
// lanes of one register; vpmuludq gives lo32(dk) * hi32(dk) per lane and a vpshufd swaps
// neighbouring lanes for the acc[i ^ 1] += d[i] term. Definition in fingerprint.h.
#include <immintrin.h>

#include <cstring>

#include "fingerprint.h"
#include "kernels.h"

namespace dwcp {
namespace {

inline __m256i ld(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

inline __m256i stripe(__m256i acc, __m256i d, __m256i key) {
  const __m256i dk = _mm256_xor_si256(d, key);
  const __m256i prod = _mm256_mul_epu32(dk, _mm256_srli_epi64(dk, 32));
  const __m256i swapped = _mm256_shuffle_epi32(d, _MM_SHUFFLE(1, 0, 3, 2));
  return _mm256_add_epi64(acc, _mm256_add_epi64(prod, swapped));
}

uint64_t page(const uint8_t* p, size_t len, const __m256i key[8]) {
  __m256i acc = _mm256_set_epi64x(static_cast<int64_t>(fp::kP4), static_cast<int64_t>(fp::kP3),
                                  static_cast<int64_t>(fp::kP2), static_cast<int64_t>(fp::kP1));
  const size_t full = len / 32;
  size_t s = 0;
  for (; s + 8 <= full; s += 8) {
    for (size_t j = 0; j < 8; ++j) acc = stripe(acc, ld(p + 32 * (s + j)), key[j]);
  }
  for (; s < full; ++s) acc = stripe(acc, ld(p + 32 * s), key[s & 7]);
  if (len % 32 != 0) {
    alignas(32) uint8_t last[32] = {};
    std::memcpy(last, p + 32 * full, len % 32);
    acc = stripe(acc, ld(last), key[full & 7]);
  }
  alignas(32) uint64_t a[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(a), acc);
  return fp::finish(a, len);
}

}  // namespace

void fingerprints_avx2(const uint8_t* p, size_t n, uint64_t* out) {
  __m256i key[8];
  for (int j = 0; j < 8; ++j) key[j] = ld(&fp::kSecret.v[4 * j]);
  for (size_t off = 0; off < n; off += kPageSize) {
    const size_t len = n - off < kPageSize ? n - off : kPageSize;
    *out++ = page(p + off, len, key);
  }
}

}  // namespace dwcp
