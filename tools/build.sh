#!/usr/bin/env bash
# Configures and builds dtrain into build/ (incremental). Used by run.sh and test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
args=(-DCMAKE_BUILD_TYPE=Release)
# CUDA Toolkit and NCCL live here when present (compile-only on machines without a GPU).
[[ -d /usr/local/cuda ]] && args+=(-DCUDAToolkit_ROOT=/usr/local/cuda)
cmake -S . -B build "${args[@]}" "$@" > build.log 2>&1 || { cat build.log; exit 1; }
mv build.log build/configure.log
cmake --build build -j"$(nproc)"
