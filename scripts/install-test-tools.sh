#!/usr/bin/env bash
# What the tests need from Debian's packages: redis-server (the tests start their own instances),
# chromium (the /docs and live-page tests drive it headless) and Node.js with npm (the JS client's
# tests); then the JS client's npm packages (clients/js/package-lock.json).
set -euo pipefail
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)

npm_packages() {
    # Only when the lock file changed since the last install: `make test` stays fast.
    local js; js="$(dirname "$0")/../clients/js"
    if [ ! -f "$js/node_modules/.package-lock.json" ] || \
            [ "$js/package-lock.json" -nt "$js/node_modules/.package-lock.json" ]; then
        (cd "$js" && npm ci --no-audit --no-fund --loglevel=error)
    fi
}

if [ "${#need[@]}" -eq 0 ]; then
    npm_packages
    exit 0
fi
if [ "$(id -u)" = 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "error: install Debian's packages: ${need[*]}" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq "${need[@]}" >/dev/null
npm_packages
