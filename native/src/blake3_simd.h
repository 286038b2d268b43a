// Lane-parallel BLAKE3 compression: every SIMD lane hashes a different input. Included by
// blake3_avx2.cc and blake3_avx512.cc, each providing an Ops type (vector type, rotations,
// message transpose); the anonymous namespace keeps each instantiation in its own TU.
#pragma once

#include <cstring>

#include "blake3.h"

namespace dwcp::b3 {
namespace {

template <class O, class V>
__attribute__((always_inline)) inline void g(V& a, V& b, V& c, V& d, V mx, V my) {
  a = O::add(O::add(a, b), mx);
  d = O::rot16(O::xor_(d, a));
  c = O::add(c, d);
  b = O::rot12(O::xor_(b, c));
  a = O::add(O::add(a, b), my);
  d = O::rot8(O::xor_(d, a));
  c = O::add(c, d);
  b = O::rot7(O::xor_(b, c));
}

template <class O, class V>
__attribute__((always_inline)) inline void round(V v[16], const V m[16], int r) {
  const uint8_t* s = kSchedule.s[r];
  g<O>(v[0], v[4], v[8], v[12], m[s[0]], m[s[1]]);
  g<O>(v[1], v[5], v[9], v[13], m[s[2]], m[s[3]]);
  g<O>(v[2], v[6], v[10], v[14], m[s[4]], m[s[5]]);
  g<O>(v[3], v[7], v[11], v[15], m[s[6]], m[s[7]]);
  g<O>(v[0], v[5], v[10], v[15], m[s[8]], m[s[9]]);
  g<O>(v[1], v[6], v[11], v[12], m[s[10]], m[s[11]]);
  g<O>(v[2], v[7], v[8], v[13], m[s[12]], m[s[13]]);
  g<O>(v[3], v[4], v[9], v[14], m[s[14]], m[s[15]]);
}

// Hashes O::kLanes inputs in parallel.
template <class O>
void hash_group(const uint8_t* const* in, size_t blocks, uint64_t counter, bool increment,
                uint8_t flags, uint8_t flags_start, uint8_t flags_end, uint8_t* out) {
  using V = typename O::V;
  constexpr size_t W = O::kLanes;
  uint32_t lo[W], hi[W];
  for (size_t l = 0; l < W; ++l) {
    const uint64_t c = counter + (increment ? l : 0);
    lo[l] = static_cast<uint32_t>(c);
    hi[l] = static_cast<uint32_t>(c >> 32);
  }
  const V ctr_lo = O::loadu(lo), ctr_hi = O::loadu(hi);
  V h[8];
  for (int i = 0; i < 8; ++i) h[i] = O::set1(kIV[i]);
  uint8_t bf = flags | flags_start;
  for (size_t b = 0; b < blocks; ++b) {
    if (b + 1 == blocks) bf |= flags_end;
    V m[16];
    O::load_msg(in, b * kBlockLen, m);
    V v[16] = {h[0],         h[1],         h[2],         h[3],         h[4],   h[5],
               h[6],         h[7],         O::set1(kIV[0]), O::set1(kIV[1]), O::set1(kIV[2]),
               O::set1(kIV[3]), ctr_lo,    ctr_hi,       O::set1(kBlockLen), O::set1(bf)};
    round<O>(v, m, 0);
    round<O>(v, m, 1);
    round<O>(v, m, 2);
    round<O>(v, m, 3);
    round<O>(v, m, 4);
    round<O>(v, m, 5);
    round<O>(v, m, 6);
    for (int i = 0; i < 8; ++i) h[i] = O::xor_(v[i], v[i + 8]);
    bf = flags;
  }
  O::store_cvs(h, out);
}

// Stores h[word] (one lane per input) as W consecutive 32-byte chaining values.
template <class O>
void scatter_cvs(const typename O::V h[8], uint8_t* out) {
  constexpr size_t W = O::kLanes;
  uint32_t t[8][W];
  for (int i = 0; i < 8; ++i) O::storeu(t[i], h[i]);
  for (size_t l = 0; l < W; ++l) {
    for (int i = 0; i < 8; ++i) std::memcpy(out + 32 * l + 4 * i, &t[i][l], 4);
  }
}

}  // namespace
}  // namespace dwcp::b3
