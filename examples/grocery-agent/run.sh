#!/usr/bin/env bash
# Starts the local shop, builds the agent and runs it. Send the approval from
# another terminal when asked: weft send-event grocery-1 approval '{"approved": true}'
set -euo pipefail
cd "$(dirname "$0")"
WEFT=${WEFT:-../../target/debug/weft}
python3 shop.py 8765 &
SHOP=$!
trap 'kill $SHOP' EXIT
"$WEFT" build app.py -o grocery-agent.wasm
"$WEFT" run grocery-agent.wasm --id "${ID:-grocery-1}" --allow-host 127.0.0.1 \
    --input '{"shop": "http://127.0.0.1:8765", "request": "milk, eggs, bread, butter and coffee"}'
