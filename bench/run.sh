#!/usr/bin/env bash
# Builds weft and the benchmark in release mode, builds the Python guest
# when componentize-py is installed and the JavaScript guest when the
# JavaScript SDK's packages are, and runs every workload.
#   bash bench/run.sh            # full sizes (about 10 minutes after the build;
#                                # --repeat 3: about 20)
#   bash bench/run.sh --quick    # smaller sizes
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v rustup >/dev/null; then rustup target add wasm32-wasip2; fi
cargo build --release -p weft -p weft-bench
# Workloads each open a fresh data dir; compiled components are shared, as a
# server compiles a component once and then loads it from its cache.
export WEFT_CACHE_DIR="${WEFT_CACHE_DIR:-$PWD/target/bench/cache}"
args=("$@")
if command -v componentize-py >/dev/null && python3 -c "import importlib.util as u; exit(u.find_spec('weft') is None)"; then
    mkdir -p target/bench
    target/release/weft build tests/guests-py/scenarios.py -o target/bench/scenarios-py.wasm
    # The same workflow for the shared mode (`pysh`).
    target/release/weft build tests/guests-py/scenarios.py --isolation shared -o target/bench/scenarios-py-shared.wasm
    args+=(--python target/bench/scenarios-py.wasm --python-shared target/bench/scenarios-py-shared.wasm)
else
    echo "componentize-py or the weft Python SDK is missing: Python workloads skipped" >&2
fi
if command -v node >/dev/null && [ -d guest-sdk-js/node_modules/@bytecodealliance/componentize-js ]; then
    mkdir -p target/bench
    target/release/weft build tests/guests-js/scenarios.js --class Scenarios -o target/bench/scenarios-js.wasm
    args+=(--js target/bench/scenarios-js.wasm)
else
    echo "Node.js or the JavaScript SDK's packages (npm ci in guest-sdk-js) are missing: JavaScript workloads skipped" >&2
fi
exec target/release/weft-bench --weft target/release/weft "${args[@]}"
