// XOR delta encoder/decoder skeleton shared by the scalar and AVX2 translation units. Each TU
// instantiates it with its own scan primitives; the anonymous namespace keeps the two
// instantiations apart (see kernels.h on why that matters).
//
// Format (native/README.md): u32 magic "XDL1", u32 length, then records
// [u32 zeroRun][u32 litLen][litLen bytes of old^new], all little-endian. A literal starts and
// ends with a non-zero byte; it ends where a run of >= kXorDeltaMinZeroRun zero bytes (or a run
// reaching the end) begins, so the encoding is canonical and every path emits the same bytes.
#pragma once

#include <cstring>

#include "kernels.h"

namespace dwcp {
namespace {

inline void put32(uint8_t*& w, size_t v) {
  const uint32_t x = static_cast<uint32_t>(v);
  for (int i = 0; i < 4; ++i) *w++ = static_cast<uint8_t>(x >> (8 * i));
}

inline uint32_t get32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
         static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24;
}

// Ops provides:
//   size_t zero_prefix(a, b, from, n)  -- count of equal bytes starting at from
//   size_t literal_end(a, b, start, n) -- start of the first separating zero run after start
//   void xor_into(dst, a, b, len)      -- dst = a ^ b
//   void xor_apply(dst, lit, len)      -- dst ^= lit
template <class Ops>
size_t encode(const uint8_t* a, const uint8_t* b, size_t n, uint8_t* out) {
  uint8_t* w = out;
  put32(w, kXorDeltaMagic);
  put32(w, n);
  size_t pos = 0;
  while (pos < n) {
    const size_t z = Ops::zero_prefix(a, b, pos, n);
    if (pos + z == n) {
      put32(w, z);
      put32(w, 0);
      break;
    }
    const size_t s = pos + z;
    const size_t e = Ops::literal_end(a, b, s, n);
    put32(w, z);
    put32(w, e - s);
    Ops::xor_into(w, a + s, b + s, e - s);
    w += e - s;
    pos = e;
  }
  return static_cast<size_t>(w - out);
}

// Walks the records without touching data: decode validates first, so a bad delta never
// modifies out (which may be old itself).
inline bool valid(size_t n, const uint8_t* d, size_t dn) {
  if (dn < 8 || get32(d) != kXorDeltaMagic || get32(d + 4) != n) return false;
  size_t pos = 0;
  for (size_t r = 8; r < dn;) {
    if (dn - r < 8) return false;
    const size_t z = get32(d + r), len = get32(d + r + 4);
    r += 8;
    if (z > n - pos) return false;
    pos += z;
    if (len > n - pos || len > dn - r) return false;
    pos += len;
    r += len;
  }
  return pos == n;
}

template <class Ops>
bool decode(const uint8_t* old, size_t n, const uint8_t* d, size_t dn, uint8_t* out) {
  if (!valid(n, d, dn)) return false;
  if (n != 0 && out != old) std::memcpy(out, old, n);  // out == old: decode in place
  size_t pos = 0;
  for (size_t r = 8; r < dn;) {
    const size_t z = get32(d + r), len = get32(d + r + 4);
    pos += z;
    Ops::xor_apply(out + pos, d + r + 8, len);
    pos += len;
    r += 8 + len;
  }
  return true;
}

// Scalar run logic, also used by the SIMD path for buffer tails. run = zero bytes seen so far
// (ending at i); returns the literal end or n if the scan reaches the end first.
inline size_t scan_runs(const uint8_t* a, const uint8_t* b, size_t i, size_t n, size_t& run) {
  for (; i < n; ++i) {
    if (a[i] == b[i]) {
      if (++run == kXorDeltaMinZeroRun) return i + 1 - run;
    } else {
      run = 0;
    }
  }
  return n;
}

}  // namespace
}  // namespace dwcp
