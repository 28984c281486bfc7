#!/usr/bin/env bash
# Build the Rust policy plugins into WebAssembly components in plugins/dist/, and record the hash of
# the sources they were built from (plugins/dist/SOURCES.sha256). The engine's tests use the
# committed components, and fail if the sources changed since they were built.
#
#   scripts/build-plugins.sh            rebuild plugins/dist/
#   scripts/build-plugins.sh --check    fail if plugins/dist/ is stale (no wasm target needed)
#   scripts/build-plugins.sh --hash     print the current sources hash
set -euo pipefail
cd "$(dirname "$0")/.."

# Every file a component is built from: the SDK and the Rust sources, manifests and lock files under
# plugins/. The same rule is in engine/tests/plugin_dist.rs; keep the two in step.
sources_hash() {
  find sdk/Cargo.toml sdk/src sdk/wit plugins -type f \
    \( -name '*.rs' -o -name '*.wit' -o -name Cargo.toml -o -name Cargo.lock \) \
    -not -path '*/target/*' -not -path 'plugins/dist/*' | LC_ALL=C sort |
    while read -r f; do printf '%s  %s\n' "$(sha256sum <"$f" | cut -d' ' -f1)" "$f"; done |
    sha256sum | cut -d' ' -f1
}

case "${1:-}" in
  --hash) sources_hash; exit 0 ;;
  --check)
    want="$(cat plugins/dist/SOURCES.sha256 2>/dev/null || true)"
    have="$(sources_hash)"
    if [ "$want" != "$have" ]; then
      echo "plugins/dist/ is stale (sources $have, built from ${want:-nothing}): run scripts/build-plugins.sh" >&2
      exit 1
    fi
    echo "plugins/dist/ is fresh"; exit 0 ;;
  "") ;;
  *) echo "usage: $0 [--check|--hash]" >&2; exit 2 ;;
esac

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  echo "the wasm32-unknown-unknown target is missing: rustup target add wasm32-unknown-unknown" >&2
  exit 1
fi

guests=(auto-assign-rules test-guest test-escape)
manifest=plugins/Cargo.toml
cargo build --locked --manifest-path "$manifest" --release --target wasm32-unknown-unknown \
  $(printf -- '-p %s ' "${guests[@]}")
cargo build --locked --manifest-path "$manifest" --release -p componentize
mkdir -p plugins/dist
for g in "${guests[@]}"; do
  core="plugins/target/wasm32-unknown-unknown/release/${g//-/_}.wasm"
  plugins/target/release/componentize "$core" "plugins/dist/$g.wasm"
  echo "built plugins/dist/$g.wasm ($(wc -c <"plugins/dist/$g.wasm") bytes)"
done

# The Rust plugin template must keep compiling against the SDK.
cargo build --locked --manifest-path examples/plugin-rust/Cargo.toml --release \
  --target wasm32-unknown-unknown --target-dir plugins/target

sources_hash >plugins/dist/SOURCES.sha256
echo "sources hash $(cat plugins/dist/SOURCES.sha256)"
