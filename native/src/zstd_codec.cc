// See zstd_codec.h. One compression and one decompression context per thread (the libuv pool's
// threads live as long as the process), so a chunk costs no context allocation.
#include "zstd_codec.h"

#include <zstd.h>

#include <memory>

namespace dwcp {
namespace {

struct CctxFree {
  void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
};
struct DctxFree {
  void operator()(ZSTD_DCtx* d) const { ZSTD_freeDCtx(d); }
};

ZSTD_CCtx* cctx() {
  thread_local std::unique_ptr<ZSTD_CCtx, CctxFree> c(ZSTD_createCCtx());
  return c.get();
}
ZSTD_DCtx* dctx() {
  thread_local std::unique_ptr<ZSTD_DCtx, DctxFree> d(ZSTD_createDCtx());
  return d.get();
}

}  // namespace

size_t zstd_bound(size_t n) { return ZSTD_compressBound(n); }

size_t zstd_pack(const uint8_t* src, size_t n, uint8_t* dst, size_t cap, int level) {
  ZSTD_CCtx* c = cctx();
  if (c == nullptr) return 0;
  if (level < kZstdMinLevel) level = kZstdMinLevel;
  if (level > kZstdMaxLevel) level = kZstdMaxLevel;
  ZSTD_CCtx_reset(c, ZSTD_reset_session_and_parameters);
  if (ZSTD_isError(ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, level))) return 0;
  if (ZSTD_isError(ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, 1))) return 0;
  const size_t r = ZSTD_compress2(c, dst, cap, src, n);
  return ZSTD_isError(r) ? 0 : r;
}

ZstdUnpack zstd_unpack(const uint8_t* src, size_t n, uint8_t* dst, size_t raw_len) {
  // Exactly one frame: trailing bytes or a second frame could otherwise decode past raw_len.
  const size_t frame = ZSTD_findFrameCompressedSize(src, n);
  if (ZSTD_isError(frame) || frame != n) return ZstdUnpack::NotOneFrame;
  const unsigned long long declared = ZSTD_getFrameContentSize(src, n);
  if (declared == ZSTD_CONTENTSIZE_UNKNOWN || declared == ZSTD_CONTENTSIZE_ERROR ||
      declared != static_cast<unsigned long long>(raw_len))
    return ZstdUnpack::WrongDeclaredSize;
  ZSTD_DCtx* d = dctx();
  if (d == nullptr) return ZstdUnpack::Corrupt;
  ZSTD_DCtx_reset(d, ZSTD_reset_session_and_parameters);
  // A window larger than the chunk is never needed; refusing it bounds the decoder's own memory.
  ZSTD_DCtx_setParameter(d, ZSTD_d_windowLogMax, 27);
  const size_t r = ZSTD_decompressDCtx(d, dst, raw_len, src, n);
  if (ZSTD_isError(r) || r != raw_len) return ZstdUnpack::Corrupt;
  return ZstdUnpack::Ok;
}

const char* zstd_unpack_reason(ZstdUnpack r) {
  switch (r) {
    case ZstdUnpack::Ok:
      return "ok";
    case ZstdUnpack::NotOneFrame:
      return "zstd chunk is not exactly one frame";
    case ZstdUnpack::WrongDeclaredSize:
      return "zstd chunk does not declare the chunk's decompressed size";
    case ZstdUnpack::Corrupt:
      return "zstd chunk does not decompress to its declared size";
  }
  return "zstd chunk is corrupt";
}

}  // namespace dwcp
