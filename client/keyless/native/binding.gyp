# The keyless addon. It must resolve every OpenSSL symbol against the running `node`
# binary (which exports them): never add -lcrypto, a second libcrypto would have its
# own provider store. Headers come from <nodedir>/include/node/openssl.
# Built by scripts/build-addon.js, which copies this file into an ABI-specific
# staging directory and rewrites the source paths.
{
  "targets": [
    {
      "target_name": "keyless",
      "sources": [
        "src/addon.cc",
        "src/keymgmt.cc",
        "src/nonblocking.cc",
        "src/provider.cc",
        "src/remote_signer.cc",
        "src/self_check.cc",
        "src/signature.cc"
      ],
      "defines": ["NAPI_VERSION=8", "OPENSSL_API_COMPAT=30000", "OPENSSL_NO_DEPRECATED"],
      "cflags_cc": ["-std=gnu++17", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "cflags_cc!": ["-fno-exceptions"],
      "libraries": []
    }
  ]
}
