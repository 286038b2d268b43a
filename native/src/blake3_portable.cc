// BLAKE3 portable compression and the tree driver shared by every path.
#include <atomic>
#include <cstring>
#include <mutex>
#include <utility>
#include <vector>

#include "blake3.h"
#include "kernels.h"

namespace dwcp {
namespace b3 {
namespace {

inline uint32_t rotr(uint32_t x, int r) { return (x >> r) | (x << (32 - r)); }

inline void g(uint32_t v[16], int a, int b, int c, int d, uint32_t mx, uint32_t my) {
  v[a] += v[b] + mx;
  v[d] = rotr(v[d] ^ v[a], 16);
  v[c] += v[d];
  v[b] = rotr(v[b] ^ v[c], 12);
  v[a] += v[b] + my;
  v[d] = rotr(v[d] ^ v[a], 8);
  v[c] += v[d];
  v[b] = rotr(v[b] ^ v[c], 7);
}

inline uint32_t load32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
         static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24;
}

inline void store_cv(const uint32_t cv[8], uint8_t* out) {
  for (int i = 0; i < 8; ++i) {
    for (int j = 0; j < 4; ++j) out[4 * i + j] = static_cast<uint8_t>(cv[i] >> (8 * j));
  }
}

void compress(uint32_t cv[8], const uint8_t block[kBlockLen], uint32_t block_len, uint64_t counter,
              uint8_t flags) {
  uint32_t m[16];
  for (int i = 0; i < 16; ++i) m[i] = load32(block + 4 * i);
  uint32_t v[16] = {cv[0],  cv[1],  cv[2],  cv[3],  cv[4], cv[5], cv[6],
                    cv[7],  kIV[0], kIV[1], kIV[2], kIV[3], static_cast<uint32_t>(counter),
                    static_cast<uint32_t>(counter >> 32), block_len, flags};
  for (const auto& s : kSchedule.s) {
    g(v, 0, 4, 8, 12, m[s[0]], m[s[1]]);
    g(v, 1, 5, 9, 13, m[s[2]], m[s[3]]);
    g(v, 2, 6, 10, 14, m[s[4]], m[s[5]]);
    g(v, 3, 7, 11, 15, m[s[6]], m[s[7]]);
    g(v, 0, 5, 10, 15, m[s[8]], m[s[9]]);
    g(v, 1, 6, 11, 12, m[s[10]], m[s[11]]);
    g(v, 2, 7, 8, 13, m[s[12]], m[s[13]]);
    g(v, 3, 4, 9, 14, m[s[14]], m[s[15]]);
  }
  for (int i = 0; i < 8; ++i) cv[i] = v[i] ^ v[i + 8];
}

// Chaining value of one chunk of 0..1024 bytes (a partial last chunk, or the root chunk).
void chunk_cv(const uint8_t* p, size_t len, uint64_t counter, uint8_t extra_end_flags, uint8_t* out) {
  uint32_t cv[8];
  std::memcpy(cv, kIV, sizeof cv);
  const size_t blocks = len == 0 ? 1 : (len + kBlockLen - 1) / kBlockLen;
  for (size_t b = 0; b < blocks; ++b) {
    const size_t off = b * kBlockLen;
    const size_t blen = len - off < kBlockLen ? len - off : kBlockLen;
    uint8_t block[kBlockLen] = {};
    if (blen != 0) std::memcpy(block, p + off, blen);
    uint8_t flags = b == 0 ? kChunkStart : 0;
    if (b + 1 == blocks) flags |= kChunkEnd | extra_end_flags;
    compress(cv, block, static_cast<uint32_t>(blen), counter, flags);
  }
  store_cv(cv, out);
}

HashManyFn pick(Blake3Impl impl) {
  switch (impl) {
    case Blake3Impl::Avx512: return hash_many_avx512;
    case Blake3Impl::Avx2: return hash_many_avx2;
    case Blake3Impl::Portable: break;
  }
  return hash_many_portable;
}

constexpr size_t kBatch = 64;  // inputs handed to hash_many per call

// Chaining values of the whole chunks [0, full) at p into cvs; the first chunk's counter is `first`.
void hash_chunks(HashManyFn hm, const uint8_t* p, size_t full, uint8_t* cvs, uint64_t first = 0) {
  const uint8_t* ptrs[kBatch];
  for (size_t i = 0; i < full; i += kBatch) {
    const size_t k = full - i < kBatch ? full - i : kBatch;
    for (size_t j = 0; j < k; ++j) ptrs[j] = p + (i + j) * kChunkLen;
    hm(ptrs, k, kChunkLen / kBlockLen, first + i, true, 0, kChunkStart, kChunkEnd, cvs + 32 * i);
  }
}

// One tree level: pairs of src CVs become parents in dst, an odd last CV moves up unchanged.
size_t hash_level(HashManyFn hm, const uint8_t* src, size_t count, uint8_t* dst) {
  const size_t pairs = count / 2;
  const uint8_t* ptrs[kBatch];
  for (size_t i = 0; i < pairs; i += kBatch) {
    const size_t k = pairs - i < kBatch ? pairs - i : kBatch;
    for (size_t j = 0; j < k; ++j) ptrs[j] = src + (i + j) * 2 * 32;
    hm(ptrs, k, 1, 0, false, kParent, 0, 0, dst + 32 * i);
  }
  if (count & 1) std::memcpy(dst + 32 * pairs, src + 64 * pairs, 32);
  return pairs + (count & 1);
}

// Merges count >= 2 chaining values level by level into the root hash. src is overwritten, dst
// (room for (count + 1) / 2 values) is scratch.
void merge_to_root(HashManyFn hm, uint8_t* src, uint8_t* dst, size_t count, uint8_t out[32]) {
  for (size_t c = count; c > 2; std::swap(src, dst)) c = hash_level(hm, src, c, dst);
  uint32_t cv[8];
  std::memcpy(cv, kIV, sizeof cv);
  compress(cv, src, kBlockLen, 0, kParent | kRoot);
  store_cv(cv, out);
}

}  // namespace

void hash_many_portable(const uint8_t* const* inputs, size_t count, size_t blocks, uint64_t counter,
                        bool increment, uint8_t flags, uint8_t flags_start, uint8_t flags_end,
                        uint8_t* out) {
  for (size_t i = 0; i < count; ++i, out += 32) {
    uint32_t cv[8];
    std::memcpy(cv, kIV, sizeof cv);
    uint8_t bf = flags | flags_start;
    for (size_t b = 0; b < blocks; ++b) {
      if (b + 1 == blocks) bf |= flags_end;
      compress(cv, inputs[i] + b * kBlockLen, kBlockLen, counter, bf);
      bf = flags;
    }
    store_cv(cv, out);
    if (increment) ++counter;
  }
}

}  // namespace b3

namespace {

// Zero groups. Every aligned run of 64 whole chunks (64 KiB) is a complete subtree of the tree,
// and its chaining value depends only on its bytes and its first chunk's counter: for a run of
// zeros, on its index alone. An input of whole groups is therefore hashed group by group, each
// group of zeros (a hole inside a chunk of a sparse disk image, say) taking its value from a
// table instead of 64 chunk compressions and 63 parents; the digest is BLAKE3's, bit for bit.
constexpr size_t kGroupChunks = 64;
constexpr size_t kGroupLen = kGroupChunks * b3::kChunkLen;
constexpr size_t kMaxGroups = 1024;  // inputs up to 64 MiB (the largest chunk) use the table

alignas(64) uint8_t zero_group[kGroupLen];  // never written: the zeros a zero group's value is of
uint8_t zero_group_cvs[32 * kMaxGroups];
std::atomic<size_t> zero_groups_ready{0};
std::mutex zero_groups_mu;

constexpr size_t kGroupLevels = 6;  // 64 chunks: six levels of parents

// The chaining values of `groups` consecutive groups at p, the first at group index g0, into
// out: their chunk values, then six levels of parents, each level batched across all of them
// (pairs never cross a group). a and b are scratch of 32 * 64 * groups and half that.
void hash_group_run(b3::HashManyFn hm, const uint8_t* p, size_t g0, size_t groups, uint8_t* a, uint8_t* b,
                    uint8_t* out) {
  using namespace b3;
  size_t c = groups * kGroupChunks;
  hash_chunks(hm, p, c, a, g0 * kGroupChunks);
  for (size_t level = 0; level < kGroupLevels; ++level, std::swap(a, b)) c = hash_level(hm, a, c, b);
  std::memcpy(out, a, 32 * groups);
}

// The chaining value of the zero group at index g (< kMaxGroups), computed once per process.
const uint8_t* zero_group_cv(b3::HashManyFn hm, size_t g) {
  if (g >= zero_groups_ready.load(std::memory_order_acquire)) {
    std::lock_guard<std::mutex> lock(zero_groups_mu);
    uint8_t a[32 * kGroupChunks], b[32 * kGroupChunks / 2];
    for (size_t i = zero_groups_ready.load(std::memory_order_relaxed); i <= g; ++i) {
      hash_group_run(hm, zero_group, i, 1, a, b, zero_group_cvs + 32 * i);
      zero_groups_ready.store(i + 1, std::memory_order_release);
    }
  }
  return zero_group_cvs + 32 * g;
}

// BLAKE3 of n = groups * 64 KiB bytes (2 <= groups <= kMaxGroups): each run of groups with data
// hashed as one, each zero group's value from the table.
void hash_groups(b3::HashManyFn hm, bool (*is_zero)(const uint8_t*, size_t), const uint8_t* p, size_t groups,
                 uint8_t out[32]) {
  using namespace b3;
  std::vector<uint8_t> cvs(32 * groups), scratch(32 * ((groups + 1) / 2));
  std::vector<uint8_t> a(32 * kGroupChunks * groups), b(32 * kGroupChunks / 2 * groups);
  for (size_t g = 0; g < groups;) {
    size_t zero = g;  // the first zero group from g on, or groups
    while (zero < groups && !is_zero(p + zero * kGroupLen, kGroupLen)) ++zero;
    if (zero > g) hash_group_run(hm, p + g * kGroupLen, g, zero - g, a.data(), b.data(), cvs.data() + 32 * g);
    if (zero < groups) std::memcpy(cvs.data() + 32 * zero, zero_group_cv(hm, zero), 32);
    g = zero + 1;
  }
  merge_to_root(hm, cvs.data(), scratch.data(), groups, out);
}

}  // namespace

void blake3_hash(const uint8_t* p, size_t n, uint8_t out[32], Blake3Impl impl) {
  using namespace b3;
  if (n % kGroupLen == 0 && n >= 2 * kGroupLen && n <= kMaxGroups * kGroupLen) {
    // The AVX2 and AVX-512 paths are only ever picked on a CPU with AVX2 (dispatch.cc).
    hash_groups(pick(impl), impl == Blake3Impl::Portable ? is_zero_scalar : is_zero_avx2, p, n / kGroupLen, out);
    return;
  }
  if (n <= kChunkLen) {
    chunk_cv(p, n, 0, kRoot, out);
    return;
  }
  const HashManyFn hm = pick(impl);
  const size_t chunks = (n + kChunkLen - 1) / kChunkLen;
  const size_t full = n / kChunkLen;
  std::vector<uint8_t> a(32 * chunks), b(32 * ((chunks + 1) / 2));
  hash_chunks(hm, p, full, a.data());
  if (full < chunks) chunk_cv(p + full * kChunkLen, n - full * kChunkLen, full, 0, a.data() + 32 * full);
  merge_to_root(hm, a.data(), b.data(), chunks, out);
}

namespace {

constexpr size_t kPageLen = 4096;
constexpr size_t kChunksPerPage = kPageLen / b3::kChunkLen;

// The root over count >= 2 chaining values, which are left as they are.
void root_of(b3::HashManyFn hm, const uint8_t* cvs, size_t count, uint8_t out[32]) {
  std::vector<uint8_t> a(cvs, cvs + 32 * count), b(32 * ((count + 1) / 2));
  b3::merge_to_root(hm, a.data(), b.data(), count, out);
}

}  // namespace

void blake3_hash_pages(const uint8_t* p, size_t n, uint8_t* page_cvs, uint8_t out[32], Blake3Impl impl) {
  using namespace b3;
  const HashManyFn hm = pick(impl);
  const size_t chunks = n / kChunkLen;
  std::vector<uint8_t> a(32 * chunks), b(32 * chunks / 2);
  hash_chunks(hm, p, chunks, a.data());
  const size_t halves = hash_level(hm, a.data(), chunks, b.data());
  hash_level(hm, b.data(), halves, page_cvs);
  root_of(hm, page_cvs, n / kPageLen, out);
}

void blake3_page_cv(const uint8_t* page, uint64_t index, uint8_t out[32], Blake3Impl impl) {
  using namespace b3;
  const HashManyFn hm = pick(impl);
  const uint8_t* ptrs[kChunksPerPage];
  for (size_t j = 0; j < kChunksPerPage; ++j) ptrs[j] = page + j * kChunkLen;
  uint8_t a[32 * kChunksPerPage], b[32 * kChunksPerPage / 2];
  hm(ptrs, kChunksPerPage, kChunkLen / kBlockLen, index * kChunksPerPage, true, 0, kChunkStart, kChunkEnd, a);
  hash_level(hm, a, kChunksPerPage, b);
  hash_level(hm, b, kChunksPerPage / 2, out);
}

void blake3_root_from_cvs(const uint8_t* cvs, size_t count, uint8_t out[32], Blake3Impl impl) {
  root_of(b3::pick(impl), cvs, count, out);
}

}  // namespace dwcp
