#!/usr/bin/env bash
# Builds the native kernels' libFuzzer target with AddressSanitizer and UBSan and runs it
# (native/fuzz/README.md). `npm run fuzz:native -- --seconds N [--max-len B] [--rss-mb M]`.
# Needs clang with libFuzzer and libzstd (Debian: apt-get install clang libzstd-dev). The corpus is kept in
# native/fuzz/corpus (git-ignored) so a later run starts where the last one stopped; a crash
# leaves its input in native/fuzz/crashes/ and the run exits non-zero.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
src="$here/../src"
seconds=60
max_len=20000
rss_mb=1024
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --max-len) max_len="$2"; shift 2 ;;
    --rss-mb) rss_mb="$2"; shift 2 ;;
    *) echo "fuzz:native: unknown argument $1 (use --seconds N, --max-len B, --rss-mb M)" >&2; exit 2 ;;
  esac
done
cc="${CLANGXX:-clang++}"
if ! command -v "$cc" >/dev/null 2>&1; then
  echo "fuzz:native: $cc not found (Debian: apt-get install clang)" >&2
  exit 2
fi
out="${DWCP_FUZZ_BUILD:-$here/build}"
mkdir -p "$out" "$here/corpus" "$here/crashes"
bin="$out/kernels_fuzz"
flags=(-std=c++17 -O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined
  -fno-sanitize-recover=undefined -DDWCP_X86_SIMD=1)
# Each SIMD family with its own -m flags, as binding.gyp builds them; dispatch picks by CPUID.
objs=()
compile() {
  local file="$1"
  shift
  local o="$out/$(basename "$file" .cc).o"
  "$cc" "${flags[@]}" "$@" -c "$file" -o "$o"
  objs+=("$o")
}
for f in dispatch crc32c_scalar zero_scalar fingerprint_scalar xor_delta_scalar blake3_portable zstd_codec; do
  compile "$src/$f.cc"
done
compile "$src/crc32c_sse42.cc" -msse4.2 -mpclmul
for f in zero_avx2 fingerprint_avx2 xor_delta_avx2 blake3_avx2; do compile "$src/$f.cc" -mavx2; done
for f in blake3_avx512 crc32c_vpclmul; do
  compile "$src/$f.cc" -mavx512f -mavx512vl -mvpclmulqdq -mpclmul -msse4.2
done
compile "$here/kernels_fuzz.cc"
"$cc" "${flags[@]}" "${objs[@]}" -lzstd -o "$bin"
echo "fuzz:native: built $bin; running ${seconds} s, max_len ${max_len}, rss_limit_mb ${rss_mb}"
exec "$bin" "$here/corpus" -max_total_time="$seconds" -max_len="$max_len" -rss_limit_mb="$rss_mb" \
  -malloc_limit_mb="$rss_mb" -timeout=10 -print_final_stats=1 -artifact_prefix="$here/crashes/"
