// CRC32C with the SSE4.2 crc32 instruction (compiled with -msse4.2 -mpclmul).
//
// crc32 has a latency of 3 cycles and a throughput of 1/cycle, so one dependency chain runs at a
// third of the possible speed. Large blocks are split in three lanes that run interleaved; the
// lanes are merged by shifting the earlier lanes' raw state over the later lanes' length:
// shift(c, n) = c * x^(8n) mod P = crc32_u64(0, clmul(c, x^(8n-33) mod P)). The -33 cancels
// the x^32 that crc32_u64 multiplies in and the x^1 that a carry-less product of two
// bit-reflected values carries.
#include <nmmintrin.h>
#include <wmmintrin.h>

#include <cstring>

#include "kernels.h"

namespace dwcp {
namespace {

constexpr size_t kLong = 8192;  // lane length for big buffers (3 * 8 KiB per step)
constexpr size_t kShort = 256;  // lane length for the remainder

struct ShiftConsts {
  uint64_t long1, long2, short1, short2, page1, page2;
};

uint64_t shift_const(size_t nbytes) { return crc32c_xpow(8 * static_cast<uint64_t>(nbytes) - 33); }

const ShiftConsts kConsts = {shift_const(kLong),  shift_const(2 * kLong),  shift_const(kShort),
                             shift_const(2 * kShort), shift_const(kPageSize), shift_const(2 * kPageSize)};

inline uint64_t load64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

inline uint32_t shift(uint64_t crc, uint64_t k) {
  const __m128i prod = _mm_clmulepi64_si128(_mm_cvtsi64_si128(static_cast<int64_t>(crc)),
                                            _mm_cvtsi64_si128(static_cast<int64_t>(k)), 0x00);
  return static_cast<uint32_t>(_mm_crc32_u64(0, static_cast<uint64_t>(_mm_cvtsi128_si64(prod))));
}

inline uint32_t merge3(uint64_t c0, uint64_t c1, uint64_t c2, uint64_t k2, uint64_t k1) {
  return shift(c0, k2) ^ shift(c1, k1) ^ static_cast<uint32_t>(c2);
}

template <size_t L>
uint32_t three_way(uint32_t crc, const uint8_t*& p, size_t& n, uint64_t k2, uint64_t k1) {
  while (n >= 3 * L) {
    uint64_t c0 = crc, c1 = 0, c2 = 0;
    for (size_t i = 0; i < L; i += 8) {
      c0 = _mm_crc32_u64(c0, load64(p + i));
      c1 = _mm_crc32_u64(c1, load64(p + L + i));
      c2 = _mm_crc32_u64(c2, load64(p + 2 * L + i));
    }
    crc = merge3(c0, c1, c2, k2, k1);
    p += 3 * L;
    n -= 3 * L;
  }
  return crc;
}

inline bool page_zero(const uint8_t* p, size_t n) {
  uint64_t acc = 0;
  for (; n >= 8; n -= 8, p += 8) acc |= load64(p);
  while (n--) acc |= *p++;
  return acc == 0;
}

}  // namespace

uint32_t crc32c_raw_sse42(uint32_t crc, const uint8_t* p, size_t n) {
  while (n != 0 && (reinterpret_cast<uintptr_t>(p) & 7) != 0) {
    crc = _mm_crc32_u8(crc, *p++);
    --n;
  }
  crc = three_way<kLong>(crc, p, n, kConsts.long2, kConsts.long1);
  crc = three_way<kShort>(crc, p, n, kConsts.short2, kConsts.short1);
  uint64_t c = crc;
  for (; n >= 8; n -= 8, p += 8) c = _mm_crc32_u64(c, load64(p));
  crc = static_cast<uint32_t>(c);
  while (n--) crc = _mm_crc32_u8(crc, *p++);
  return crc;
}

// Three pages per step, one per lane; each lane also ORs its words so the zero map costs no
// second pass over memory.
uint32_t analyze_sse42(uint32_t crc, const uint8_t* p, size_t n, uint8_t* flags) {
  constexpr size_t P = kPageSize;
  for (; n >= 3 * P; n -= 3 * P, p += 3 * P, flags += 3) {
    uint64_t c0 = crc, c1 = 0, c2 = 0, o0 = 0, o1 = 0, o2 = 0;
    for (size_t i = 0; i < P; i += 8) {
      const uint64_t w0 = load64(p + i), w1 = load64(p + P + i), w2 = load64(p + 2 * P + i);
      c0 = _mm_crc32_u64(c0, w0);
      c1 = _mm_crc32_u64(c1, w1);
      c2 = _mm_crc32_u64(c2, w2);
      o0 |= w0;
      o1 |= w1;
      o2 |= w2;
    }
    crc = merge3(c0, c1, c2, kConsts.page2, kConsts.page1);
    flags[0] = o0 == 0;
    flags[1] = o1 == 0;
    flags[2] = o2 == 0;
  }
  for (; n != 0; ++flags) {
    const size_t len = n < P ? n : P;
    crc = crc32c_raw_sse42(crc, p, len);
    *flags = page_zero(p, len);
    p += len;
    n -= len;
  }
  return crc;
}

}  // namespace dwcp
