#!/usr/bin/env bash
# The whole test suite: install what is missing, build, get MNIST (cached in build/), run ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh
bash tools/build.sh
build/bin/dtrain data fetch mnist --into build/mnist
export DTRAIN_MNIST_DIR="$PWD/build/mnist"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
cd build
ctest --output-on-failure --timeout 900 -j"$(nproc)"
