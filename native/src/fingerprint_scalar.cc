// Page fingerprints, scalar path. Definition in fingerprint.h.
#include <cstring>

#include "fingerprint.h"
#include "kernels.h"

namespace dwcp {
namespace fp {

namespace {

inline uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

inline void stripe(uint64_t acc[4], const uint8_t* p, size_t s) {
  uint64_t d[4];
  std::memcpy(d, p, 32);  // little-endian hosts only (x86-64, arm64)
  const uint64_t* k = &kSecret.v[(s & 7) * 4];
  uint64_t add[4];
  for (int i = 0; i < 4; ++i) {
    const uint64_t dk = d[i] ^ k[i];
    add[i] = (dk & 0xFFFFFFFFull) * (dk >> 32);
  }
  for (int i = 0; i < 4; ++i) acc[i] += add[i] + d[i ^ 1];
}

uint64_t page(const uint8_t* p, size_t len) {
  uint64_t acc[4] = {kP1, kP2, kP3, kP4};
  const size_t full = len / 32;
  for (size_t s = 0; s < full; ++s) stripe(acc, p + 32 * s, s);
  if (len % 32 != 0) {
    uint8_t last[32] = {};
    std::memcpy(last, p + 32 * full, len % 32);
    stripe(acc, last, full);
  }
  return finish(acc, len);
}

}  // namespace

uint64_t finish(const uint64_t acc[4], size_t len) {
  uint64_t h = static_cast<uint64_t>(len) * kP1;
  for (int i = 0; i < 4; ++i) h = rotl(h ^ acc[i], 27) * kP2;
  h ^= h >> 33;
  h *= kP2;
  h ^= h >> 29;
  h *= kP3;
  h ^= h >> 32;
  return h;
}

}  // namespace fp

void fingerprints_scalar(const uint8_t* p, size_t n, uint64_t* out) {
  for (size_t off = 0; off < n; off += kPageSize) {
    const size_t len = n - off < kPageSize ? n - off : kPageSize;
    *out++ = fp::page(p + off, len);
  }
}

}  // namespace dwcp
