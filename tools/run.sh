#!/usr/bin/env bash
# The main job: install what is missing, build, get MNIST (verified), train, write outputs/.
# Extra arguments go to `dtrain train` (e.g. --epochs 2).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh
bash tools/build.sh
build/bin/dtrain data fetch mnist --into build/mnist
build/bin/dtrain train --data-dir build/mnist --output-dir outputs "$@"
build/bin/dtrain eval --model outputs/model --data-dir build/mnist
