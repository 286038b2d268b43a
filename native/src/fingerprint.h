// Page fingerprint definition shared by the scalar and AVX2 paths (native/fallback computes the
// same in TypeScript; see native/README.md).
//
// This is a WEAK 64-bit fingerprint: fast and good at telling changed pages apart, but not
// collision resistant. That is acceptable only because incremental sync verifies every chunk
// it rebuilds with the strong hash (BLAKE3): a fingerprint collision can cost a resend, never
// a silently wrong image.
//
// Per page (len bytes, 1..4096), over 32-byte stripes s (the last one zero-padded), with the
// stripe read as four little-endian u64 words d[0..3] and acc[0..3] starting at P1..P4:
//   dk = d[i] ^ kSecret[(s % 8) * 4 + i]
//   acc[i] += lo32(dk) * hi32(dk);  acc[i ^ 1] += d[i]          (all mod 2^64)
// then fingerprint = finish(acc, len).
#pragma once

#include <cstddef>
#include <cstdint>

namespace dwcp::fp {

constexpr uint64_t kP1 = 0x9E3779B185EBCA87ull;
constexpr uint64_t kP2 = 0xC2B2AE3D27D4EB4Full;
constexpr uint64_t kP3 = 0x165667B19E3779F9ull;
constexpr uint64_t kP4 = 0x85EBCA77C2B2AE63ull;

struct alignas(64) Secret {
  uint64_t v[32];
};

// splitmix64 from a fixed seed: 8 stripes x 4 lanes of key material.
constexpr Secret make_secret() {
  Secret s{};
  uint64_t state = 0x243F6A8885A308D3ull;
  for (auto& e : s.v) {
    state += 0x9E3779B97F4A7C15ull;
    uint64_t z = state;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    e = z ^ (z >> 31);
  }
  return s;
}

constexpr Secret kSecret = make_secret();

// Folds the four accumulators and the page length into the fingerprint (defined in
// fingerprint_scalar.cc so that every path shares one copy).
uint64_t finish(const uint64_t acc[4], size_t len);

}  // namespace dwcp::fp
