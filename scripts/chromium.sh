#!/usr/bin/env bash
# Makes sure Chromium and chromedriver are installed for the web UI's
# browser test (tests/e2e/ui.rs). Sourced by scripts/test.sh. Installs
# Debian's `chromium` and `chromium-driver` with apt-get when this runs as
# root (or with sudo); otherwise fails and says what to install. It never
# skips.

if ! command -v chromedriver >/dev/null || ! { command -v chromium >/dev/null || command -v chromium-browser >/dev/null; }; then
    as_root=""
    if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then as_root="sudo"; fi
    if command -v apt-get >/dev/null && { [ "$(id -u)" = 0 ] || [ -n "$as_root" ]; }; then
        echo "Installing chromium and chromium-driver for the web UI's browser test" >&2
        $as_root apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y -qq chromium chromium-driver >/dev/null
    fi
fi
if ! command -v chromedriver >/dev/null; then
    echo "error: the web UI's browser test needs Chromium and chromedriver: apt-get install chromium chromium-driver" >&2
    exit 1
fi
