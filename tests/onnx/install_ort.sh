#!/usr/bin/env bash
# Installs ONNX Runtime for Node (CPU) into DIR once; later runs reuse it (a cache in build/).
# --ignore-scripts: the package's install script only fetches optional CUDA parts, offline it fails.
set -euo pipefail
dir=${1:?usage: install_ort.sh DIR}
if [[ -f "$dir/node_modules/onnxruntime-node/package.json" ]]; then
  echo "onnxruntime-node already in $dir"; exit 0
fi
command -v npm >/dev/null || { echo "install_ort.sh: npm not found (tools/install-deps.sh installs it)" >&2; exit 1; }
mkdir -p "$dir"
npm install --prefix "$dir" --ignore-scripts --no-audit --no-fund --loglevel=error onnxruntime-node@1.30.0
test -f "$dir/node_modules/onnxruntime-node/package.json"
