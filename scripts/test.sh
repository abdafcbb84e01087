#!/usr/bin/env bash
# Installs what the tests need, checks formatting and lints, and runs every
# test (the test guests are built from source by tests/artifacts/build.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v rustup >/dev/null; then
    rustup target add wasm32-wasip2
    rustup component add rustfmt clippy 2>/dev/null || true
fi
# Python guests: componentize-py builds them, mypy checks the SDK, and the
# tests build against the SDK installed from this checkout.
python3 -m pip install --quiet --disable-pip-version-check \
    componentize-py==0.25.1 mypy ./guest-sdk-python
# Make the scripts pip just installed (componentize-py) reachable.
export PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
if command -v pyenv >/dev/null; then pyenv rehash || true; fi

# JavaScript guests: esbuild, componentize-js and TypeScript at the versions
# guest-sdk-js/package-lock.json pins (installed again only when it changes).
if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
    echo "scripts/test.sh: the JavaScript SDK needs Node.js 20+ and npm (Debian: apt-get install nodejs npm)" >&2
    exit 1
fi
if ! cmp -s guest-sdk-js/package-lock.json guest-sdk-js/node_modules/.weft-lock; then
    (cd guest-sdk-js && npm ci --no-audit --no-fund --loglevel=error &&
        cp package-lock.json node_modules/.weft-lock)
fi
# The SDK's TypeScript types, checked against a TypeScript workflow.
(cd guest-sdk-js && node_modules/.bin/tsc -p tsconfig.json)

# PostgreSQL for the tests of the shared store.
source scripts/postgres.sh
# Chromium and chromedriver for the web UI's browser test.
source scripts/chromium.sh

cargo fmt --all --check
cargo clippy --all-targets -- -D warnings
cargo test --workspace
