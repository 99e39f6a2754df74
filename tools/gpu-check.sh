#!/usr/bin/env bash
# The GPU check: on a machine with an NVIDIA GPU, CUDA and a pip PyTorch 2.x (no MPI, no Debian
# packages, no internet needed), configure and build dtrain's GPU profile (core, data, models,
# the NCCL backend, the CUDA tests) against that PyTorch's LibTorch and NCCL, run the _CUDA
# tests and print a summary.
#
#   bash tools/gpu-check.sh [--build-dir DIR] [--torch-prefix DIR] [--deps DIR] [--no-gpu-ok]
#   bash tools/gpu-check.sh --bundle DIR
#
# --bundle DIR (on a Debian 12 machine with dtrain's dependencies installed) copies what the GPU
#   profile needs and a GPU machine may lack into DIR: nlohmann-json, fmt and spdlog headers,
#   GoogleTest's sources, zlib and OpenSSL's libcrypto (headers and static libraries). Carry DIR
#   to the GPU machine and pass --deps DIR (build/gpu-deps is used when it exists).
# --torch-prefix DIR  LibTorch's CMake prefix (default: torch.utils.cmake_prefix_path of python3).
# --no-gpu-ok         build and run where no GPU is visible (the _CUDA tests then skip): checks
#                     the GPU profile's build on a CPU machine.
#
# Environment: CUDA_HOME (default /usr/local/cuda), NCCL_ROOT (default: the nvidia-nccl wheel's
# nvidia/nccl folder, else the CUDA Toolkit's NCCL).
set -euo pipefail
cd "$(dirname "$0")/.."

die() {
  echo "gpu-check: $*" >&2
  exit 2
}

bundle() {
  local dir=$1 arch
  arch=$(gcc -dumpmachine)
  for f in /usr/include/nlohmann/json.hpp /usr/include/fmt/format-inl.h \
    /usr/include/spdlog/spdlog-inl.h /usr/include/zlib.h /usr/include/openssl/evp.h \
    "/usr/lib/$arch/libz.a" "/usr/lib/$arch/libcrypto.a" /usr/src/googletest/CMakeLists.txt; do
    [[ -e $f ]] || die "--bundle: $f is missing (Debian: bash tools/install-deps.sh installs it)"
  done
  rm -rf "$dir"
  mkdir -p "$dir/include" "$dir/lib"
  cp -r /usr/include/nlohmann /usr/include/fmt /usr/include/spdlog /usr/include/openssl \
    "$dir/include/"
  cp "/usr/include/$arch/openssl/"*.h "$dir/include/openssl/"
  cp /usr/include/zlib.h /usr/include/zconf.h "$dir/include/"
  cp "/usr/lib/$arch/libz.a" "/usr/lib/$arch/libcrypto.a" "$dir/lib/"
  cp -r /usr/src/googletest "$dir/googletest"
  echo "gpu-check: dependency bundle in $dir ($(du -sh "$dir" | cut -f1)); on the GPU machine:"
  echo "  bash tools/gpu-check.sh --deps $dir"
}

build_dir=build-gpu
torch_prefix=""
deps=""
no_gpu_ok=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --bundle)
      [[ $# -ge 2 ]] || die "--bundle needs a folder"
      bundle "$2"
      exit 0
      ;;
    --build-dir | --torch-prefix | --deps)
      [[ $# -ge 2 ]] || die "$1 needs a value"
      case $1 in
        --build-dir) build_dir=$2 ;;
        --torch-prefix) torch_prefix=$2 ;;
        --deps) deps=$2 ;;
      esac
      shift 2
      ;;
    --no-gpu-ok)
      no_gpu_ok=1
      shift
      ;;
    -h | --help)
      sed -n '2,22p' "$0"
      exit 0
      ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

py=$(command -v python3) || die "python3 not found (the check uses PyTorch's LibTorch)"
if [[ -z $torch_prefix ]]; then
  torch_prefix=$("$py" -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null) ||
    die "python3 cannot import torch; install PyTorch or give --torch-prefix"
fi
[[ -d $torch_prefix ]] || die "--torch-prefix $torch_prefix: no such folder"
gpu_info=$("$py" - <<'EOF' 2>/dev/null || true
import torch
cuda = torch.cuda.is_available()
name = torch.cuda.get_device_name(0) if cuda else "none"
print(f"{torch.__version__}|{torch.version.cuda}|{torch.cuda.device_count() if cuda else 0}|{name}")
EOF
)
IFS='|' read -r torch_version torch_cuda gpu_count gpu_name <<<"${gpu_info:-?|?|0|none}"
if [[ $gpu_count == 0 && $no_gpu_ok == 0 ]]; then
  die "PyTorch sees no GPU (torch $torch_version, CUDA $torch_cuda); on a CPU machine use --no-gpu-ok"
fi

cuda_home=${CUDA_HOME:-/usr/local/cuda}
nccl_root=${NCCL_ROOT:-}
if [[ -z $nccl_root ]]; then
  nccl_root=$("$py" -c 'import nvidia.nccl as n; print(list(n.__path__)[0])' 2>/dev/null || true)
fi
if [[ -z $deps && -d build/gpu-deps ]]; then deps=$PWD/build/gpu-deps; fi

args=(-DDTRAIN_PROFILE=gpu -DCMAKE_BUILD_TYPE=Release "-DCMAKE_PREFIX_PATH=$torch_prefix")
command -v ninja >/dev/null && args+=(-G Ninja)
if [[ -x $cuda_home/bin/nvcc ]]; then
  # LibTorch's CMake config of a CUDA build looks for the toolkit and the CUDA compiler.
  args+=("-DCUDAToolkit_ROOT=$cuda_home" "-DCMAKE_CUDA_COMPILER=$cuda_home/bin/nvcc")
fi
[[ -n $nccl_root ]] && args+=("-DNCCL_ROOT=$nccl_root")
[[ $gpu_count != 0 ]] && args+=(-DDTRAIN_WITH_NCCL=ON)
[[ -n $deps ]] && args+=("-DDTRAIN_DEPS_DIR=$(realpath "$deps")")
# The GPU's architecture only (LibTorch's config otherwise probes or lists every one).
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$("$py" -c 'import torch; c = torch.cuda.get_device_capability(0); print(f"{c[0]}.{c[1]}")' 2>/dev/null || echo 9.0)}

echo "gpu-check: torch $torch_version (CUDA $torch_cuda) at $torch_prefix; GPUs: $gpu_count ($gpu_name)"
echo "gpu-check: configuring $build_dir: cmake ${args[*]}"
mkdir -p "$build_dir"
t0=$(date +%s)
cmake -S . -B "$build_dir" "${args[@]}" >"$build_dir/configure.log" 2>&1 || {
  tail -40 "$build_dir/configure.log"
  die "configure failed (whole log: $build_dir/configure.log)"
}
grep -E "^-- dtrain:" "$build_dir/configure.log" || true
cmake --build "$build_dir" -j"$(nproc)" --target cuda_test >"$build_dir/build.log" 2>&1 || {
  grep -E -m 20 "error|Error" "$build_dir/build.log" || tail -40 "$build_dir/build.log"
  die "build failed (whole log: $build_dir/build.log)"
}
t1=$(date +%s)
echo "gpu-check: built in $((t1 - t0)) s"

lib_path="$torch_prefix/../../lib"
[[ -n $nccl_root ]] && lib_path="$nccl_root/lib:$lib_path"
result=$build_dir/cuda_test.json
set +e
LD_LIBRARY_PATH="$lib_path:${LD_LIBRARY_PATH:-}" "$build_dir/bin/cuda_test" \
  --gtest_output="json:$result" 2>&1 | tee "$build_dir/cuda_test.log"
rc=${PIPESTATUS[0]}
set -e
[[ -f $result ]] || die "cuda_test wrote no results (exit $rc); see $build_dir/cuda_test.log"

"$py" - "$result" "$gpu_count" "$gpu_name" "$torch_version" "$torch_cuda" <<'EOF'
import json, sys
result, gpus, name, torch_version, cuda = sys.argv[1:]
data = json.load(open(result))
rows, counts = [], {"passed": 0, "failed": 0, "skipped": 0}
for suite in data.get("testsuites", []):
    for t in suite.get("testsuite", []):
        if t.get("failures"):
            state = "failed"
        elif t.get("result") == "SKIPPED" or t.get("status") == "NOTRUN":
            state = "skipped"
        else:
            state = "passed"
        counts[state] += 1
        rows.append((f'{suite["name"]}.{t["name"]}', state, t.get("time", "")))
print()
print(f"== dtrain GPU check: torch {torch_version}, CUDA {cuda}, {gpus} GPU(s): {name}")
for n, state, time in rows:
    print(f"  {state:8s} {time:>8s}  {n}")
print(f"== {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped")
EOF
if [[ $rc -ne 0 ]]; then exit 1; fi
if [[ $gpu_count != 0 ]] && grep -q '"result": "SKIPPED"' "$result"; then
  echo "gpu-check: a GPU is visible but tests were skipped (see above)" >&2
  exit 1
fi
