// Zero detection, scalar path.
#include <cstring>

#include "kernels.h"

namespace dwcp {
namespace {

inline uint64_t load64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

}  // namespace

uint64_t or_reduce_scalar(const uint8_t* p, size_t n) {
  uint64_t a = 0, b = 0, c = 0, d = 0;
  for (; n >= 32; n -= 32, p += 32) {
    a |= load64(p);
    b |= load64(p + 8);
    c |= load64(p + 16);
    d |= load64(p + 24);
  }
  for (; n != 0; --n) a |= *p++;
  return a | b | c | d;
}

bool is_zero_scalar(const uint8_t* p, size_t n) {
  constexpr size_t kStep = 256;  // check for an early exit every 256 bytes
  for (; n >= kStep; n -= kStep, p += kStep) {
    if (or_reduce_scalar(p, kStep) != 0) return false;
  }
  return or_reduce_scalar(p, n) == 0;
}

bool zero_pages_scalar(const uint8_t* p, size_t n, uint8_t* flags) {
  bool all = true;
  for (size_t off = 0; off < n; off += kPageSize) {
    const size_t len = n - off < kPageSize ? n - off : kPageSize;
    const bool z = or_reduce_scalar(p + off, len) == 0;
    *flags++ = z ? 1 : 0;
    all = all && z;
  }
  return all;
}

}  // namespace dwcp
