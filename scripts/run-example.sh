#!/usr/bin/env bash
# Builds weft and the hello example from source and runs the example on the
# embedded journal (./.weft). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v rustup >/dev/null; then
    rustup target add wasm32-wasip2
fi
cargo build -p weft
cargo build --release --target wasm32-wasip2 \
    --manifest-path examples/hello-rust/Cargo.toml --target-dir target/guests
exec target/debug/weft run target/guests/wasm32-wasip2/release/hello.wasm \
    --input '{"name": "world"}'
