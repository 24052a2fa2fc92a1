#!/usr/bin/env bash
# Regenerates generated/ from protos/: Python messages, gRPC stubs and typed .pyi stubs.
# The output is committed; `make check` runs this and fails on any difference.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python}
# The mypy-protobuf plugins (protoc-gen-mypy, protoc-gen-mypy_grpc) sit beside that python.
case "$py" in */*) PATH="$(cd "$(dirname "$py")" && pwd):$PATH" ;; esac
rm -rf generated/meterpb
mkdir -p generated
common=$("$py" -c 'import grpc_tools, pathlib; print(pathlib.Path(grpc_tools.__file__).parent / "_proto")')
googleapis=$("$py" -c 'import google.rpc.status_pb2 as s, pathlib; print(pathlib.Path(s.__file__).parents[2])')
"$py" -m grpc_tools.protoc -I protos -I "$common" -I "$googleapis" \
  --python_out=generated --grpc_python_out=generated \
  --mypy_out=generated --mypy_grpc_out=generated \
  protos/meterpb/v1/*.proto
for d in generated/meterpb generated/meterpb/v1; do
  printf '"""Generated from protos/ by scripts/proto.sh. DO NOT CHANGE."""\n' >"$d/__init__.py"
done
touch generated/meterpb/py.typed
