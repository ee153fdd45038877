#!/usr/bin/env bash
# Makes sure redis-server is available (Debian's package); the tests start their own instance.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
elif command -v sudo >/dev/null 2>&1; then
    sudo apt-get update -qq && sudo apt-get install -y -qq redis-server >/dev/null
else
    echo "error: redis-server is not installed; install Debian's redis-server package" >&2
    exit 1
fi
# The package starts a system-wide server; the tests do not use it.
command -v redis-server >/dev/null
