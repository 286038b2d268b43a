// BLAKE3 (unkeyed hash mode, 32-byte output), written for dwcp from the BLAKE3 specification.
// The tree is hashed bottom-up: all chunk chaining values first (many chunks at once in SIMD
// lanes), then each level of parents, also batched. Pairing neighbours level by level and
// carrying an odd last node up unchanged gives exactly the spec's left-balanced tree.
#pragma once

#include <cstddef>
#include <cstdint>

namespace dwcp::b3 {

constexpr size_t kBlockLen = 64;
constexpr size_t kChunkLen = 1024;
constexpr uint8_t kChunkStart = 1, kChunkEnd = 2, kParent = 4, kRoot = 8;

constexpr uint32_t kIV[8] = {0x6A09E667u, 0xBB67AE85u, 0x3C6EF372u, 0xA54FF53Au,
                             0x510E527Fu, 0x9B05688Cu, 0x1F83D9ABu, 0x5BE0CD19u};

struct Schedule {
  uint8_t s[7][16];
};

// Round r reads message word kSchedule.s[r][i]; each round permutes the previous one.
constexpr Schedule make_schedule() {
  constexpr uint8_t perm[16] = {2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8};
  Schedule t{};
  for (uint8_t i = 0; i < 16; ++i) t.s[0][i] = i;
  for (int r = 1; r < 7; ++r) {
    for (int i = 0; i < 16; ++i) t.s[r][i] = t.s[r - 1][perm[i]];
  }
  return t;
}

constexpr Schedule kSchedule = make_schedule();

// Hashes count inputs of `blocks` whole 64-byte blocks each (key = IV), writing one 32-byte
// chaining value per input to out. Input i uses counter + i when increment is set.
using HashManyFn = void (*)(const uint8_t* const* inputs, size_t count, size_t blocks,
                            uint64_t counter, bool increment, uint8_t flags, uint8_t flags_start,
                            uint8_t flags_end, uint8_t* out);

void hash_many_portable(const uint8_t* const* inputs, size_t count, size_t blocks, uint64_t counter,
                        bool increment, uint8_t flags, uint8_t flags_start, uint8_t flags_end,
                        uint8_t* out);
void hash_many_avx2(const uint8_t* const* inputs, size_t count, size_t blocks, uint64_t counter,
                    bool increment, uint8_t flags, uint8_t flags_start, uint8_t flags_end, uint8_t* out);
void hash_many_avx512(const uint8_t* const* inputs, size_t count, size_t blocks, uint64_t counter,
                      bool increment, uint8_t flags, uint8_t flags_start, uint8_t flags_end,
                      uint8_t* out);

}  // namespace dwcp::b3
