#!/usr/bin/env bash
# The TypeScript client's tier (clients/typescript, the npm package @meter/client).
#
#   scripts/ts.sh gen [DIR]   regenerate clients/typescript/src/gen (into DIR/src/gen if given)
#   scripts/ts.sh check       regenerate into a scratch directory and compare with src/gen
#   scripts/ts.sh test        build, test against a real `meter serve`, and pack
#
# Each installs the package's dependencies with `npm ci` first (once per package-lock.json).
# Without npm the tier is skipped with a message; under CI (CI or METER_TS_REQUIRED set) it fails
# instead, as tests/foreign does for buf: .ci/run installs npm where the machine lacks it.
# PYTHON names the venv's interpreter, whose googleapis-common-protos ships google/rpc/*.proto.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
pkg=$root/clients/typescript
py=${PYTHON:-$root/.venv/bin/python}
# Scratch space for the whole run, removed however it ends.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

unavailable() {
  if [ -n "${CI:-}" ] || [ -n "${METER_TS_REQUIRED:-}" ]; then
    echo "TypeScript client: $* (CI must run this tier: .ci/run installs npm)" >&2
    exit 1
  fi
  echo "TypeScript client: skipped, $*" >&2
  exit 0
}

# npm ci when node_modules is missing or older than the lock file; the stamp marks a finished one.
deps() {
  command -v npm >/dev/null || unavailable "npm is not installed (apt-get install npm)"
  local stamp=$pkg/node_modules/.meter-npm-ci
  if [ ! -e "$stamp" ] || [ "$pkg/package-lock.json" -nt "$stamp" ]; then
    (cd "$pkg" && npm ci --no-audit --no-fund --loglevel=error >&2) ||
      unavailable "npm ci failed (is the npm registry reachable?)"
    touch "$stamp"
  fi
}

# The protos buf compiles: protos/ and google/rpc/{status,error_details}.proto. meter.proto
# imports status.proto, and the client decodes ErrorInfo, BadRequest and RetryInfo from
# grpc-status-details-bin, so both are generated too. They come from the venv's
# googleapis-common-protos, pinned exactly in pyproject.toml's dev extras: the same files
# scripts/proto.sh compiles against, nothing vendored, nothing fetched from a schema registry
# (unreachable offline), and the same bytes on every machine, so the drift check cannot flap.
inputs() {
  local into=$1 rpc
  rpc=$("$py" -c 'import google.rpc.status_pb2 as s, pathlib; print(pathlib.Path(s.__file__).parent)')
  mkdir -p "$into/google/rpc"
  cp -r "$root/protos/meterpb" "$into/"
  cp "$rpc/status.proto" "$rpc/error_details.proto" "$into/google/rpc/"
}

gen() {
  local out=${1:-$pkg} protos
  protos=$(mktemp -d -p "$work")
  inputs "$protos"
  rm -rf "$out/src/gen"
  (cd "$pkg" && node_modules/.bin/buf generate "$protos" --template buf.gen.yaml -o "$out")
  local f
  find "$out/src/gen" -name '*.ts' -print0 | while IFS= read -r -d '' f; do
    { echo "// Generated from protos/ by scripts/ts.sh (make ts). DO NOT CHANGE."; cat "$f"; } >"$f.new"
    mv "$f.new" "$f"
  done
}

check() {
  local fresh=$work/check
  gen "$fresh"
  diff -r "$pkg/src/gen" "$fresh/src/gen" ||
    { echo "clients/typescript/src/gen is stale: run make ts" >&2; exit 1; }
}

test_() {
  cd "$pkg"
  npm run --silent build
  npm test
  packed
}

# What `npm pack` publishes: the compiled client, its types and the README, nothing else; and
# the tarball installed alone in a fresh project imports and calls (a closed port: Unavailable).
packed() {
  local scratch=$work/pack tarball
  mkdir -p "$scratch"
  tarball=$scratch/$(npm pack --ignore-scripts --silent --pack-destination "$scratch")
  tar -tzf "$tarball" | sed 's|^package/||' | sort >"$scratch/files"
  local f
  for f in README.md package.json dist/index.js dist/index.d.ts dist/gen/meterpb/v1/meter_pb.js; do
    grep -qx "$f" "$scratch/files" || { echo "npm pack: $f is missing" >&2; exit 1; }
  done
  if grep -vqE '^(dist/.*|README.md|package.json)$' "$scratch/files"; then
    echo "npm pack: unexpected files:" >&2
    grep -vE '^(dist/.*|README.md|package.json)$' "$scratch/files" >&2
    exit 1
  fi
  mkdir "$scratch/app"
  printf '{"name": "app", "private": true, "type": "module"}\n' >"$scratch/app/package.json"
  (cd "$scratch/app" && npm install --prefer-offline --no-audit --no-fund --loglevel=error "$tarball" >&2)
  (cd "$scratch/app" && node --input-type=module -e '
    import { MeterClient, Unavailable, requestIdFor } from "@meter/client";
    const meter = new MeterClient({ target: "127.0.0.1:1", retry: { maxAttempts: 1 } });
    try {
      await meter.balance("ws-pack");
      throw new Error("a closed port answered");
    } catch (e) {
      if (!(e instanceof Unavailable)) throw e;
    } finally {
      meter.close();
    }
    if (requestIdFor("1") !== "job:1") throw new Error("requestIdFor");
  ')
  echo "npm pack: $(basename "$tarball"), $(wc -l <"$scratch/files") files; installed alone, it imports and calls"
}

case "${1:-}" in
  gen) deps && gen "${2:-}" ;;
  check) deps && check ;;
  test) deps && test_ ;;
  *)
    echo "usage: $0 gen [DIR] | check | test" >&2
    exit 2
    ;;
esac
