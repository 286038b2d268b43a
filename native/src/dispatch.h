// Runtime dispatch: one table for the best path the CPU supports, one for the scalar path.
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

const Kernels& best_kernels();
const Kernels& scalar_kernels();
inline const Kernels& kernels(bool scalar) { return scalar ? scalar_kernels() : best_kernels(); }

}  // namespace dwcp
