#!/usr/bin/env bash
# Installs FerretDB into .bin/ferretdb, built from the Go module proxy.
#
# A plain `go install .../cmd/ferretdb@v1.24.2` builds a binary that panics at start, because
# the module ships without build/version/version.txt. So we copy the module source out of the
# read-only module cache, write that file, and build from the copy.
set -euo pipefail

VERSION="${FERRETDB_VERSION:-v1.24.2}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN_DIR="$ROOT/.bin"
TARGET="$BIN_DIR/ferretdb"

if [ -x "$TARGET" ] && "$TARGET" --version 2>/dev/null | grep -q "${VERSION#v}"; then
    echo "ferretdb $VERSION already installed at $TARGET"
    exit 0
fi

if ! command -v go >/dev/null 2>&1; then
    cat >&2 <<MSG
error: cannot build FerretDB: Go is not installed.
Ways out:
  - install Go (https://go.dev/dl/) and run 'make ferretdb' again, or
  - put a FerretDB $VERSION binary at $TARGET or on the PATH, or
  - run against MongoDB instead: export MONGODB_URI=mongodb://HOST:27017
MSG
    exit 1
fi

work="$(mktemp -d)"
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT

echo "downloading github.com/FerretDB/FerretDB@$VERSION from the Go module proxy..."
src="$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "github.com/FerretDB/FerretDB@$VERSION" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
if [ -z "$src" ] || [ ! -d "$src" ]; then
    echo "error: go mod download did not give a source directory for FerretDB $VERSION" >&2
    exit 1
fi

cp -r "$src" "$work/src"
chmod -R u+w "$work/src"
printf '%s\n' "$VERSION" > "$work/src/build/version/version.txt"

echo "building ferretdb (this takes a few minutes on a small machine)..."
mkdir -p "$BIN_DIR"
(cd "$work/src" && CGO_ENABLED=0 go build -trimpath -o "$TARGET" ./cmd/ferretdb)
"$TARGET" --version >/dev/null
echo "installed $TARGET"
