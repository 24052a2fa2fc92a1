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
  local out=${1:-$pkg} scratch
  scratch=$(mktemp -d)
  trap 'rm -rf "$scratch"' RETURN
  inputs "$scratch"
  rm -rf "$out/src/gen"
  (cd "$pkg" && node_modules/.bin/buf generate "$scratch" --template buf.gen.yaml -o "$out")
}

check() {
  local scratch
  scratch=$(mktemp -d)
  trap 'rm -rf "$scratch"' RETURN
  gen "$scratch"
  diff -r "$pkg/src/gen" "$scratch/src/gen" ||
    { echo "clients/typescript/src/gen is stale: run make ts" >&2; exit 1; }
}

test_() {
  cd "$pkg"
  npm run --silent build
  npm test
  # What `npm pack` would publish: the compiled client and its types, the README, nothing else.
  local listing
  listing=$(npm pack --dry-run --json 2>/dev/null)
  node -e '
    const [{ files }] = JSON.parse(process.argv[1]);
    const paths = files.map((f) => f.path);
    const need = ["README.md", "package.json", "dist/index.js", "dist/index.d.ts",
                  "dist/gen/meterpb/v1/meter_pb.js"];
    const missing = need.filter((p) => !paths.includes(p));
    const stray = paths.filter((p) => !(p.startsWith("dist/") || need.includes(p)));
    if (missing.length || stray.length) {
      console.error("npm pack: missing", missing, "unexpected", stray);
      process.exit(1);
    }
    console.log(`npm pack: ${paths.length} files`);
  ' "$listing"
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
