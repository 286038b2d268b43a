// zstd for chunk payloads, linked against the system libzstd (Debian: libzstd-dev). Both calls
// work on caller-owned buffers of fixed size: the decoder never writes past `raw_len` bytes and
// never allocates by what the input claims.
#pragma once

#include <cstddef>
#include <cstdint>

namespace dwcp {

// Least and greatest compression levels a caller may ask for (negative: zstd's fast levels).
constexpr int kZstdMinLevel = -7;
constexpr int kZstdMaxLevel = 19;

// Worst-case compressed size of n bytes (ZSTD_compressBound).
size_t zstd_bound(size_t n);

// Compresses src into dst (capacity >= zstd_bound(n)) as one frame that records its content
// size. Returns the compressed size, or 0 on failure.
size_t zstd_pack(const uint8_t* src, size_t n, uint8_t* dst, size_t cap, int level);

enum class ZstdUnpack { Ok, NotOneFrame, WrongDeclaredSize, Corrupt };

// Decompresses src, which must be exactly one zstd frame declaring `raw_len` content bytes, into
// dst (capacity raw_len). The declared size is checked before a byte is decoded; the decoder is
// given exactly raw_len bytes of room, and anything but exactly raw_len bytes out is Corrupt.
ZstdUnpack zstd_unpack(const uint8_t* src, size_t n, uint8_t* dst, size_t raw_len);

const char* zstd_unpack_reason(ZstdUnpack r);

}  // namespace dwcp
