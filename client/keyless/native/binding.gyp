# The keyless addon: the provider core (src/core) with its Node front end (src/node). It
# must resolve every OpenSSL symbol against the running `node` binary (which exports them):
# never add -lcrypto, a second libcrypto would have its own provider store. Headers come
# from <nodedir>/include/node/openssl.
# Built by scripts/build-addon.js, which copies this file into an ABI-specific staging
# directory and rewrites the source paths. The standalone provider for nginx and HAProxy
# (src/standalone, same core) is built by scripts/build-provider.js against the system's
# OpenSSL. build/generated holds the SignatureAlgorithm numbers generated from the proto
# (scripts/generate-native-algorithms.js).
{
  "targets": [
    {
      "target_name": "keyless",
      "sources": [
        "src/core/keymgmt.cc",
        "src/core/provider_core.cc",
        "src/core/signature.cc",
        "src/node/addon.cc",
        "src/node/node_provider.cc",
        "src/node/nonblocking.cc",
        "src/node/remote_signer.cc",
        "src/node/self_check.cc",
        "src/node/ticket_keys.cc"
      ],
      "include_dirs": ["src/core", "src/node", "build/generated"],
      "defines": ["NAPI_VERSION=8", "OPENSSL_API_COMPAT=30000", "OPENSSL_NO_DEPRECATED"],
      "cflags_cc": ["-std=gnu++17", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "cflags_cc!": ["-fno-exceptions"],
      "libraries": []
    }
  ]
}
