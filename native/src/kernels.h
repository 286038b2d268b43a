// Kernel entry points. Every kernel has a scalar C++ version; SIMD versions live in their own
// translation units, compiled with their own -m flags, and are only called after CPUID says the
// CPU (and the OS, via XGETBV) supports them. See dispatch.cc.
//
// SIMD translation units must not instantiate templates from the standard library: inline
// functions are merged across translation units by the linker, and an AVX2-compiled copy of,
// say, std::min could end up serving a scalar caller on a CPU without AVX2.
#pragma once

#include <cstddef>
#include <cstdint>

namespace dwcp {

constexpr size_t kPageSize = 4096;

inline size_t page_count(size_t n) { return (n + kPageSize - 1) / kPageSize; }

// ---- CRC32C (Castagnoli, reflected). "raw" = state without the pre/post inversion. ----
uint32_t crc32c_raw_scalar(uint32_t state, const uint8_t* p, size_t n);
uint32_t crc32c_raw_sse42(uint32_t state, const uint8_t* p, size_t n);
uint32_t crc32c_raw_vpclmul(uint32_t state, const uint8_t* p, size_t n);
// x^m mod P and a*b mod P in the reflected bit order (zlib's multmodp convention).
uint32_t crc32c_multmodp(uint32_t a, uint32_t b);
uint32_t crc32c_xpow(uint64_t m);
// crc(A||B) from crc(A), crc(B) and |B|.
uint32_t crc32c_combine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b);
// crc of len zero bytes, continuing from seed.
uint32_t crc32c_zeros(uint64_t len, uint32_t seed);

// ---- zero detection; flags get 1 byte per 4 KiB page (1 = all zero), the last page may be
// partial. zero_pages_* return whether the whole buffer is zero. ----
bool is_zero_scalar(const uint8_t* p, size_t n);
bool is_zero_avx2(const uint8_t* p, size_t n);
bool zero_pages_scalar(const uint8_t* p, size_t n, uint8_t* flags);
bool zero_pages_avx2(const uint8_t* p, size_t n, uint8_t* flags);
// OR of every 64-bit word, no early exit: the bench's read-bandwidth probe.
uint64_t or_reduce_scalar(const uint8_t* p, size_t n);
uint64_t or_reduce_avx2(const uint8_t* p, size_t n);

// ---- CRC32C and zero map in one pass (the mover's per-chunk call); returns the raw state ----
uint32_t analyze_scalar(uint32_t state, const uint8_t* p, size_t n, uint8_t* flags);
uint32_t analyze_sse42(uint32_t state, const uint8_t* p, size_t n, uint8_t* flags);
uint32_t analyze_vpclmul(uint32_t state, const uint8_t* p, size_t n, uint8_t* flags);

// ---- page fingerprints: one u64 per 4 KiB page ----
void fingerprints_scalar(const uint8_t* p, size_t n, uint64_t* out);
void fingerprints_avx2(const uint8_t* p, size_t n, uint64_t* out);

// ---- XOR delta (format in native/README.md) ----
constexpr uint32_t kXorDeltaMagic = 0x314C4458;  // "XDL1" little-endian
constexpr size_t kXorDeltaMinZeroRun = 16;
size_t xor_delta_bound(size_t n);
size_t xor_delta_encode_scalar(const uint8_t* a, const uint8_t* b, size_t n, uint8_t* out);
size_t xor_delta_encode_avx2(const uint8_t* a, const uint8_t* b, size_t n, uint8_t* out);
// Returns false (and leaves out partially written) when the delta is malformed.
bool xor_delta_decode_scalar(const uint8_t* old, size_t n, const uint8_t* d, size_t dn, uint8_t* out);
bool xor_delta_decode_avx2(const uint8_t* old, size_t n, const uint8_t* d, size_t dn, uint8_t* out);

// ---- strong hash: BLAKE3, 32-byte output ----
enum class Blake3Impl { Portable, Avx2, Avx512 };
void blake3_hash(const uint8_t* p, size_t n, uint8_t out[32], Blake3Impl impl);
// Page chaining values: for n = pages * 4096 bytes with pages a power of two >= 2, the tree is
// perfectly balanced and each 4 KiB page is a subtree of four chunks. blake3_hash_pages writes
// each page's subtree chaining value (pages * 32 bytes) and the hash; blake3_page_cv gives one
// page's value at page index `index`; blake3_root_from_cvs (count a power of two >= 2) merges
// page values into the hash, so a page change is checked by hashing that page alone.
void blake3_hash_pages(const uint8_t* p, size_t n, uint8_t* page_cvs, uint8_t out[32], Blake3Impl impl);
void blake3_page_cv(const uint8_t* page, uint64_t index, uint8_t out[32], Blake3Impl impl);
void blake3_root_from_cvs(const uint8_t* cvs, size_t count, uint8_t out[32], Blake3Impl impl);

}  // namespace dwcp
