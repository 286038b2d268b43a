// XOR delta, scalar path.
#include "xor_delta_impl.h"

namespace dwcp {
namespace {

struct ScalarOps {
  static size_t zero_prefix(const uint8_t* a, const uint8_t* b, size_t from, size_t n) {
    size_t i = from;
    while (i < n && a[i] == b[i]) ++i;
    return i - from;
  }
  static size_t literal_end(const uint8_t* a, const uint8_t* b, size_t start, size_t n) {
    size_t run = 0;
    const size_t e = scan_runs(a, b, start, n, run);
    return e == n ? n - run : e;
  }
  static void xor_into(uint8_t* dst, const uint8_t* a, const uint8_t* b, size_t len) {
    for (size_t i = 0; i < len; ++i) dst[i] = a[i] ^ b[i];
  }
  static void xor_apply(uint8_t* dst, const uint8_t* lit, size_t len) {
    for (size_t i = 0; i < len; ++i) dst[i] ^= lit[i];
  }
};

}  // namespace

// Worst case: every literal but the first is preceded by >= 16 zero bytes and holds >= 1 byte.
size_t xor_delta_bound(size_t n) { return 8 + n + 8 * (n / (kXorDeltaMinZeroRun + 1) + 2); }

size_t xor_delta_encode_scalar(const uint8_t* a, const uint8_t* b, size_t n, uint8_t* out) {
  return encode<ScalarOps>(a, b, n, out);
}

bool xor_delta_decode_scalar(const uint8_t* old, size_t n, const uint8_t* d, size_t dn, uint8_t* out) {
  return decode<ScalarOps>(old, n, d, dn, out);
}

}  // namespace dwcp
