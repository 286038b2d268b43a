// Runtime dispatch. Three tables: the best path the CPU supports, the same without AVX-512
// (so the SSE4.2 CRC and AVX2 BLAKE3 paths stay testable on AVX-512 machines), and scalar.
#pragma once

#include "kernels.h"

namespace dwcp {

struct Kernels {
  uint32_t (*crc32c_raw)(uint32_t, const uint8_t*, size_t);
  uint32_t (*analyze)(uint32_t, const uint8_t*, size_t, uint8_t*);
  bool (*is_zero)(const uint8_t*, size_t);
  bool (*zero_pages)(const uint8_t*, size_t, uint8_t*);
  uint64_t (*or_reduce)(const uint8_t*, size_t);
  void (*fingerprints)(const uint8_t*, size_t, uint64_t*);
  size_t (*xor_encode)(const uint8_t*, const uint8_t*, size_t, uint8_t*);
  bool (*xor_decode)(const uint8_t*, size_t, const uint8_t*, size_t, uint8_t*);
  Blake3Impl blake3;
  const char* crc32c_name;
  const char* zero_name;
  const char* fingerprint_name;
  const char* xor_name;
  const char* blake3_name;
};

// Tier numbers are part of the binding's interface (native/loader.ts).
enum class Tier { Best = 0, Scalar = 1, NoAvx512 = 2 };

const Kernels& kernels(Tier tier);
inline const Kernels& best_kernels() { return kernels(Tier::Best); }

}  // namespace dwcp
