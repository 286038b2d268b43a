// libFuzzer target for the native kernels that take bytes off the wire (native/fuzz/README.md).
// The XOR delta decoder parses a delta a peer sent, and the zstd chunk decoder a compressed chunk
// (into a buffer of exactly the chunk's raw length, which it must never overrun); every other kernel (CRC32C, zero map,
// fingerprints, BLAKE3, the delta encoder) runs over received chunk bytes of any length and
// alignment. Each input is run through every implementation this CPU has (scalar, SSE4.2/AVX2,
// AVX-512), which must agree exactly; AddressSanitizer and UBSan catch reads or writes outside
// the buffers, which are allocated to their exact size so any overrun hits a redzone.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "../src/dispatch.h"
#include "../src/zstd_codec.h"

namespace {

using dwcp::Kernels;
using dwcp::Tier;

[[noreturn]] void disagree(const char* what) {
  __builtin_printf("kernels disagree: %s\n", what);
  std::abort();
}

// Exact-size heap copies: a read one byte past the end is an ASan report, not a silent read.
std::vector<uint8_t> copy(const uint8_t* p, size_t n) { return std::vector<uint8_t>(p, p + n); }

uint32_t le16(const uint8_t* p) { return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8; }

// Decodes `delta` against `old` with every tier, in a separate and an in-place buffer; all must
// give the same verdict and bytes, and a refused delta must leave an in-place buffer untouched.
void check_decode(const Kernels* const* ks, size_t nk, const std::vector<uint8_t>& old,
                  const std::vector<uint8_t>& delta) {
  const size_t n = old.size();
  std::vector<uint8_t> first;
  bool first_ok = false;
  for (size_t i = 0; i < nk; ++i) {
    std::vector<uint8_t> out(n);
    const bool ok = ks[i]->xor_decode(old.data(), n, delta.data(), delta.size(), out.data());
    std::vector<uint8_t> in_place = old;
    const bool ok2 = ks[i]->xor_decode(in_place.data(), n, delta.data(), delta.size(), in_place.data());
    if (ok != ok2) disagree("xor_decode in place vs separate verdict");
    if (ok && in_place != out) disagree("xor_decode in place vs separate bytes");
    if (!ok && in_place != old) disagree("refused xor_decode modified its buffer");
    if (i == 0) {
      first = out;
      first_ok = ok;
    } else if (ok != first_ok || (ok && out != first)) {
      disagree("xor_decode across tiers");
    }
  }
}

// A peer's zstd chunk: `packed` must decode to exactly raw_len bytes into an exact-size buffer or
// be refused; and `plain` must survive a round trip through the encoder.
void check_zstd(const std::vector<uint8_t>& plain, const std::vector<uint8_t>& packed, size_t raw_len) {
  std::vector<uint8_t> out(raw_len);
  (void)dwcp::zstd_unpack(packed.data(), packed.size(), out.data(), out.size());
  std::vector<uint8_t> enc(dwcp::zstd_bound(plain.size()));
  const size_t m = dwcp::zstd_pack(plain.data(), plain.size(), enc.data(), enc.size(), 1);
  if (m == 0) disagree("zstd_pack failed");
  enc.resize(m);
  std::vector<uint8_t> back(plain.size());
  if (dwcp::zstd_unpack(enc.data(), enc.size(), back.data(), back.size()) != dwcp::ZstdUnpack::Ok || back != plain)
    disagree("zstd_unpack(zstd_pack(x)) != x");
  if (!plain.empty()) {
    std::vector<uint8_t> short_out(plain.size() - 1);
    if (dwcp::zstd_unpack(enc.data(), enc.size(), short_out.data(), short_out.size()) == dwcp::ZstdUnpack::Ok)
      disagree("zstd_unpack accepted a frame larger than its buffer");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Kernels* ks[] = {&dwcp::kernels(Tier::Scalar), &dwcp::kernels(Tier::NoAvx512), &dwcp::kernels(Tier::Best)};
  constexpr size_t nk = sizeof ks / sizeof ks[0];
  if (size < 3) return 0;
  const uint8_t mode = data[0];
  const size_t n = le16(data + 1) % (size - 2 + 1);  // old length: at most what the input holds
  data += 3;
  size -= 3;
  if (n > size) return 0;
  const std::vector<uint8_t> old = copy(data, n);
  const std::vector<uint8_t> rest = copy(data + n, size - n);

  switch (mode % 4) {
    case 3:
      check_zstd(old, rest, n);
      break;
    case 0: {
      // The rest is a delta from a peer: hostile framing, lengths and magic.
      check_decode(ks, nk, old, rest);
      // The same bytes after a well-formed prefix (magic and length), so fuzzing reaches records.
      std::vector<uint8_t> framed(8 + rest.size());
      const uint32_t magic = dwcp::kXorDeltaMagic, len = static_cast<uint32_t>(n);
      for (int i = 0; i < 4; ++i) framed[i] = static_cast<uint8_t>(magic >> (8 * i));
      for (int i = 0; i < 4; ++i) framed[4 + i] = static_cast<uint8_t>(len >> (8 * i));
      if (!rest.empty()) std::memcpy(framed.data() + 8, rest.data(), rest.size());
      check_decode(ks, nk, old, framed);
      break;
    }
    case 1: {
      // Encode old -> new (new: the rest, cut or padded to old's length), decode it back.
      std::vector<uint8_t> updated(n, 0);
      if (!rest.empty() && n > 0) std::memcpy(updated.data(), rest.data(), rest.size() < n ? rest.size() : n);
      std::vector<uint8_t> first;
      for (size_t i = 0; i < nk; ++i) {
        std::vector<uint8_t> delta(dwcp::xor_delta_bound(n));
        delta.resize(ks[i]->xor_encode(old.data(), updated.data(), n, delta.data()));
        if (i == 0) first = delta;
        else if (delta != first) disagree("xor_encode across tiers (the encoding is canonical)");
        std::vector<uint8_t> back(n);
        if (!ks[i]->xor_decode(old.data(), n, delta.data(), delta.size(), back.data()))
          disagree("xor_decode refused xor_encode's delta");
        if (back != updated) disagree("xor_decode(xor_encode(a, b)) != b");
      }
      break;
    }
    default: {
      // Chunk bytes of any length and alignment: checksums, zero map, fingerprints, BLAKE3.
      const std::vector<uint8_t> buf = copy(data, size);
      const size_t pages = dwcp::page_count(size);
      uint32_t crc0 = 0, an0 = 0;
      bool zero0 = false;
      std::vector<uint8_t> flags0;
      std::vector<uint64_t> fp0;
      uint8_t h0[32];
      for (size_t i = 0; i < nk; ++i) {
        const uint32_t crc = ks[i]->crc32c_raw(0xFFFFFFFFu, buf.data(), size);
        std::vector<uint8_t> flags(pages), aflags(pages);
        const uint32_t an = ks[i]->analyze(0xFFFFFFFFu, buf.data(), size, aflags.data());
        const bool zero = ks[i]->zero_pages(buf.data(), size, flags.data());
        if (zero != ks[i]->is_zero(buf.data(), size)) disagree("zero_pages vs is_zero");
        if (an != crc || aflags != flags) disagree("analyze vs crc32c + zero_pages");
        std::vector<uint64_t> fp(pages);
        ks[i]->fingerprints(buf.data(), size, fp.data());
        uint8_t h[32];
        dwcp::blake3_hash(buf.data(), size, h, ks[i]->blake3);
        if (i == 0) {
          crc0 = crc;
          an0 = an;
          zero0 = zero;
          flags0 = flags;
          fp0 = fp;
          std::memcpy(h0, h, 32);
        } else {
          if (crc != crc0 || an != an0) disagree("crc32c across tiers");
          if (zero != zero0 || flags != flags0) disagree("zero map across tiers");
          if (fp != fp0) disagree("fingerprints across tiers");
          if (std::memcmp(h, h0, 32) != 0) disagree("blake3 across tiers");
        }
      }
      break;
    }
  }
  return 0;
}
