# dwcp_native. Each SIMD family is its own static library so that only those files are
# compiled with the wider instruction set; dispatch.cc picks them at load via CPUID.
{
  "target_defaults": {
    "cflags": ["-O3", "-fPIC", "-Wall", "-Wextra"],
    "cflags_cc": ["-std=c++17"],
  },
  "targets": [
    {
      "target_name": "dwcp_native",
      "sources": [
        "src/addon.cc",
        "src/async_workers.cc",
        "src/zero_copy.cc",
        "src/sealed.cc",
        "src/beneath.cc",
        "src/mapped_fingerprints.cc",
        "src/dispatch.cc",
        "src/crc32c_scalar.cc",
        "src/zero_scalar.cc",
        "src/fingerprint_scalar.cc",
        "src/xor_delta_scalar.cc",
        "src/blake3_portable.cc",
        "src/zstd_codec.cc",
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      # libzstd (headers: libzstd-dev) for zstd chunk compression; OpenSSL's libcrypto (headers:
      # libssl-dev) for AES-GCM of the sealed data records. Node runs on the same OpenSSL 3 ABI,
      # whether it links the system library or exports its own.
      "libraries": ["-lzstd", "-lcrypto"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "conditions": [
        ["target_arch=='x64'", {
          "dependencies": ["dwcp_sse42", "dwcp_avx2", "dwcp_avx512"],
          "defines": ["DWCP_X86_SIMD=1"],
        }],
      ],
    },
    {
      "target_name": "dwcp_sse42",
      "type": "static_library",
      "sources": ["src/crc32c_sse42.cc"],
      "cflags": ["-msse4.2", "-mpclmul"],
    },
    {
      "target_name": "dwcp_avx2",
      "type": "static_library",
      "sources": [
        "src/zero_avx2.cc",
        "src/fingerprint_avx2.cc",
        "src/xor_delta_avx2.cc",
        "src/blake3_avx2.cc",
      ],
      "cflags": ["-mavx2"],
    },
    {
      "target_name": "dwcp_avx512",
      "type": "static_library",
      "sources": ["src/blake3_avx512.cc", "src/crc32c_vpclmul.cc"],
      "cflags": ["-mavx512f", "-mavx512vl", "-mvpclmulqdq", "-mpclmul", "-msse4.2", "-Wno-maybe-uninitialized"],
    },
  ],
}
