// BLAKE3, 16 inputs per AVX-512 register, then 8 per 256-bit register for a remainder of 8..15
// (compiled with -mavx512f -mavx512vl). AVX-512 has a native rotate, which is most of the gain.
#include <immintrin.h>

#include "blake3_simd.h"

namespace dwcp::b3 {
namespace {

// 16x16 transpose of 32-bit words: row l (input l) becomes lane l of every word vector.
inline void transpose16(__m512i r[16]) {
  __m512i a[16], b[16];
  for (int i = 0; i < 16; i += 2) {
    a[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    a[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    b[i] = _mm512_unpacklo_epi64(a[i], a[i + 2]);
    b[i + 1] = _mm512_unpackhi_epi64(a[i], a[i + 2]);
    b[i + 2] = _mm512_unpacklo_epi64(a[i + 1], a[i + 3]);
    b[i + 3] = _mm512_unpackhi_epi64(a[i + 1], a[i + 3]);
  }
  // b[4g + j], 128-bit lane k = words 4k + j of rows 4g..4g+3.
  for (int j = 0; j < 4; ++j) {
    const __m512i c0 = _mm512_shuffle_i32x4(b[j], b[4 + j], 0x44);
    const __m512i c1 = _mm512_shuffle_i32x4(b[j], b[4 + j], 0xEE);
    const __m512i c2 = _mm512_shuffle_i32x4(b[8 + j], b[12 + j], 0x44);
    const __m512i c3 = _mm512_shuffle_i32x4(b[8 + j], b[12 + j], 0xEE);
    r[j] = _mm512_shuffle_i32x4(c0, c2, 0x88);
    r[4 + j] = _mm512_shuffle_i32x4(c0, c2, 0xDD);
    r[8 + j] = _mm512_shuffle_i32x4(c1, c3, 0x88);
    r[12 + j] = _mm512_shuffle_i32x4(c1, c3, 0xDD);
  }
}

struct Avx512 {
  using V = __m512i;
  static constexpr size_t kLanes = 16;
  static V add(V a, V b) { return _mm512_add_epi32(a, b); }
  static V xor_(V a, V b) { return _mm512_xor_si512(a, b); }
  static V set1(uint32_t x) { return _mm512_set1_epi32(static_cast<int>(x)); }
  static V loadu(const void* p) { return _mm512_loadu_si512(p); }
  static void storeu(void* p, V v) { _mm512_storeu_si512(p, v); }
  static V rot16(V x) { return _mm512_ror_epi32(x, 16); }
  static V rot12(V x) { return _mm512_ror_epi32(x, 12); }
  static V rot8(V x) { return _mm512_ror_epi32(x, 8); }
  static V rot7(V x) { return _mm512_ror_epi32(x, 7); }
  static void load_msg(const uint8_t* const* in, size_t off, V m[16]) {
    // 16 lanes read 16 streams 1 KiB apart; prefetching 4 blocks ahead gave +13% on 64 MiB.
    for (int l = 0; l < 16; ++l) {
      _mm_prefetch(reinterpret_cast<const char*>(in[l] + off + 256), _MM_HINT_T0);
      m[l] = loadu(in[l] + off);
    }
    transpose16(m);
  }
  static void store_cvs(const V h[8], uint8_t* out) { scatter_cvs<Avx512>(h, out); }
};

struct Avx512Vl8 {
  using V = __m256i;
  static constexpr size_t kLanes = 8;
  static V add(V a, V b) { return _mm256_add_epi32(a, b); }
  static V xor_(V a, V b) { return _mm256_xor_si256(a, b); }
  static V set1(uint32_t x) { return _mm256_set1_epi32(static_cast<int>(x)); }
  static V loadu(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
  static void storeu(void* p, V v) { _mm256_storeu_si256(static_cast<__m256i*>(p), v); }
  static V rot16(V x) { return _mm256_ror_epi32(x, 16); }
  static V rot12(V x) { return _mm256_ror_epi32(x, 12); }
  static V rot8(V x) { return _mm256_ror_epi32(x, 8); }
  static V rot7(V x) { return _mm256_ror_epi32(x, 7); }
  // Gathers word w of the 8 inputs; the 8-lane remainder is rare enough not to need a transpose.
  static void load_msg(const uint8_t* const* in, size_t off, V m[16]) {
    uint32_t t[16][8];
    for (int l = 0; l < 8; ++l) {
      for (int w = 0; w < 16; ++w) std::memcpy(&t[w][l], in[l] + off + 4 * w, 4);
    }
    for (int w = 0; w < 16; ++w) m[w] = loadu(t[w]);
  }
  static void store_cvs(const V h[8], uint8_t* out) { scatter_cvs<Avx512Vl8>(h, out); }
};

}  // namespace

void hash_many_avx512(const uint8_t* const* inputs, size_t count, size_t blocks, uint64_t counter,
                      bool increment, uint8_t flags, uint8_t flags_start, uint8_t flags_end,
                      uint8_t* out) {
  for (; count >= Avx512::kLanes; count -= Avx512::kLanes) {
    hash_group<Avx512>(inputs, blocks, counter, increment, flags, flags_start, flags_end, out);
    inputs += Avx512::kLanes;
    out += 32 * Avx512::kLanes;
    if (increment) counter += Avx512::kLanes;
  }
  if (count >= Avx512Vl8::kLanes) {
    hash_group<Avx512Vl8>(inputs, blocks, counter, increment, flags, flags_start, flags_end, out);
    inputs += Avx512Vl8::kLanes;
    out += 32 * Avx512Vl8::kLanes;
    count -= Avx512Vl8::kLanes;
    if (increment) counter += Avx512Vl8::kLanes;
  }
  hash_many_portable(inputs, count, blocks, counter, increment, flags, flags_start, flags_end, out);
}

}  // namespace dwcp::b3
