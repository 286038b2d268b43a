// CRC32C scalar path: slicing-by-8 tables, plus the GF(2) arithmetic behind combine/zeros and
// the PCLMUL shift constants used by the SSE4.2 path.
#include <array>

#include "kernels.h"

namespace dwcp {
namespace {

constexpr uint32_t kPoly = 0x82F63B78u;  // Castagnoli, reflected

using Tables = std::array<std::array<uint32_t, 256>, 8>;

constexpr Tables make_tables() {
  Tables t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ kPoly : c >> 1;
    t[0][i] = c;
  }
  for (size_t k = 1; k < 8; ++k) {
    for (size_t i = 0; i < 256; ++i) t[k][i] = (t[k - 1][i] >> 8) ^ t[0][t[k - 1][i] & 0xFF];
  }
  return t;
}

constexpr Tables kTables = make_tables();

inline uint64_t load_le64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];  // folds to one mov on little-endian
  return v;
}

// x^(2^k) mod P for k = 0..63, so x^m needs no assumption about the order of x.
std::array<uint32_t, 64> make_x2n() {
  std::array<uint32_t, 64> t{};
  uint32_t p = 1u << 30;  // x^1
  for (auto& e : t) {
    e = p;
    p = crc32c_multmodp(p, p);
  }
  return t;
}

}  // namespace

uint32_t crc32c_raw_scalar(uint32_t crc, const uint8_t* p, size_t n) {
  const auto& t = kTables;
  while (n >= 8) {
    const uint64_t w = load_le64(p);
    const uint32_t lo = static_cast<uint32_t>(w) ^ crc;
    const uint32_t hi = static_cast<uint32_t>(w >> 32);
    crc = t[7][lo & 0xFF] ^ t[6][(lo >> 8) & 0xFF] ^ t[5][(lo >> 16) & 0xFF] ^ t[4][lo >> 24] ^
          t[3][hi & 0xFF] ^ t[2][(hi >> 8) & 0xFF] ^ t[1][(hi >> 16) & 0xFF] ^ t[0][hi >> 24];
    p += 8;
    n -= 8;
  }
  while (n--) crc = (crc >> 8) ^ t[0][(crc ^ *p++) & 0xFF];
  return crc;
}

// a*b mod P with bit 31 = x^0 (reflected), as in zlib's crc32.c.
uint32_t crc32c_multmodp(uint32_t a, uint32_t b) {
  uint32_t m = 1u << 31;
  uint32_t p = 0;
  for (;;) {
    if (a & m) {
      p ^= b;
      if ((a & (m - 1)) == 0) break;
    }
    m >>= 1;
    b = (b & 1) ? (b >> 1) ^ kPoly : b >> 1;
  }
  return p;
}

uint32_t crc32c_xpow(uint64_t m) {
  static const std::array<uint32_t, 64> x2n = make_x2n();
  uint32_t p = 1u << 31;  // x^0
  for (size_t k = 0; m != 0; m >>= 1, ++k) {
    if (m & 1) p = crc32c_multmodp(x2n[k], p);
  }
  return p;
}

uint32_t crc32c_combine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b) {
  return crc32c_multmodp(crc32c_xpow(len_b * 8), crc_a) ^ crc_b;
}

uint32_t crc32c_zeros(uint64_t len, uint32_t seed) {
  return ~crc32c_multmodp(crc32c_xpow(len * 8), ~seed);
}

uint32_t analyze_scalar(uint32_t state, const uint8_t* p, size_t n, uint8_t* flags) {
  for (size_t off = 0; off < n; off += kPageSize) {
    const size_t len = n - off < kPageSize ? n - off : kPageSize;
    state = crc32c_raw_scalar(state, p + off, len);
    *flags++ = is_zero_scalar(p + off, len) ? 1 : 0;
  }
  return state;
}

}  // namespace dwcp
