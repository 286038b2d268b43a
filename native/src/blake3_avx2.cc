// BLAKE3, 8 inputs per AVX2 register (compiled with -mavx2).
#include <immintrin.h>

#include "blake3_simd.h"

namespace dwcp::b3 {
namespace {

inline void transpose8(__m256i r[8]) {
  __m256i t[8], u[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_epi32(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    u[i] = _mm256_unpacklo_epi64(t[i], t[i + 2]);
    u[i + 1] = _mm256_unpackhi_epi64(t[i], t[i + 2]);
    u[i + 2] = _mm256_unpacklo_epi64(t[i + 1], t[i + 3]);
    u[i + 3] = _mm256_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm256_permute2x128_si256(u[i], u[i + 4], 0x20);
    r[i + 4] = _mm256_permute2x128_si256(u[i], u[i + 4], 0x31);
  }
}

struct Avx2 {
  using V = __m256i;
  static constexpr size_t kLanes = 8;
  static V add(V a, V b) { return _mm256_add_epi32(a, b); }
  static V xor_(V a, V b) { return _mm256_xor_si256(a, b); }
  static V set1(uint32_t x) { return _mm256_set1_epi32(static_cast<int>(x)); }
  static V loadu(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
  static void storeu(void* p, V v) { _mm256_storeu_si256(static_cast<__m256i*>(p), v); }
  static V rot16(V x) {
    const V m = _mm256_setr_epi8(2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13, 2, 3, 0, 1, 6,
                                 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
    return _mm256_shuffle_epi8(x, m);
  }
  static V rot8(V x) {
    const V m = _mm256_setr_epi8(1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12, 1, 2, 3, 0, 5,
                                 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12);
    return _mm256_shuffle_epi8(x, m);
  }
  static V rot12(V x) { return _mm256_or_si256(_mm256_srli_epi32(x, 12), _mm256_slli_epi32(x, 20)); }
  static V rot7(V x) { return _mm256_or_si256(_mm256_srli_epi32(x, 7), _mm256_slli_epi32(x, 25)); }
  static void load_msg(const uint8_t* const* in, size_t off, V m[16]) {
    for (int half = 0; half < 2; ++half) {
      for (int l = 0; l < 8; ++l) m[8 * half + l] = loadu(in[l] + off + 32 * half);
      transpose8(m + 8 * half);
    }
  }
  static void store_cvs(const V h[8], uint8_t* out) {
    V t[8];
    for (int i = 0; i < 8; ++i) t[i] = h[i];
    transpose8(t);
    for (int l = 0; l < 8; ++l) storeu(out + 32 * l, t[l]);
  }
};

}  // namespace

void hash_many_avx2(const uint8_t* const* inputs, size_t count, size_t blocks, uint64_t counter,
                    bool increment, uint8_t flags, uint8_t flags_start, uint8_t flags_end, uint8_t* out) {
  for (; count >= Avx2::kLanes; count -= Avx2::kLanes) {
    hash_group<Avx2>(inputs, blocks, counter, increment, flags, flags_start, flags_end, out);
    inputs += Avx2::kLanes;
    out += 32 * Avx2::kLanes;
    if (increment) counter += Avx2::kLanes;
  }
  hash_many_portable(inputs, count, blocks, counter, increment, flags, flags_start, flags_end, out);
}

}  // namespace dwcp::b3
