#!/usr/bin/env bash
# Builds the libFuzzer targets (build/fuzz: Debian's clang, AddressSanitizer and
# UndefinedBehaviorSanitizer, the GPU profile's components) and runs each for SECONDS (default
# 20) from its seed corpus (tests/fuzz/corpus/<target>). A finding (a crash, a sanitizer report,
# an exception other than dtrain's own errors) fails, leaving the input in build/fuzz/findings/.
# Without TARGETs it first runs the single-process unit tests of core, data and models built
# with the same sanitizers (sanitized_unit_test).
#   bash tools/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
shift || true
targets=("$@")
unit=()
[[ ${#targets[@]} -gt 0 ]] ||
  { targets=(fuzz_idx fuzz_tf_config fuzz_model_json fuzz_checkpoint fuzz_ps); unit=(sanitized_unit_test); }
[[ $secs =~ ^[0-9]+$ ]] || { echo "fuzz.sh: SECONDS must be a whole number, got '$secs'" >&2; exit 2; }
command -v clang++ >/dev/null || { echo "fuzz.sh: clang++ not found (bash tools/install-deps.sh)" >&2; exit 2; }
mkdir -p build/fuzz/findings
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
if [[ ! -f build/fuzz/CMakeCache.txt ]]; then
  cmake -S . -B build/fuzz "${gen[@]}" -DDTRAIN_PROFILE=gpu -DDTRAIN_FUZZ=ON -DDTRAIN_WITH_NCCL=OFF \
    -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    >build/fuzz/configure.log 2>&1 || { cat build/fuzz/configure.log; exit 1; }
fi
cmake --build build/fuzz -j"$(nproc)" --target "${targets[@]}" "${unit[@]}" >build/fuzz/build.log 2>&1 ||
  { grep -E -m 20 "error" build/fuzz/build.log || tail -30 build/fuzz/build.log; exit 1; }

export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
status=0
if [[ ${#unit[@]} -gt 0 ]]; then
  if build/fuzz/bin/sanitized_unit_test >build/fuzz/unit.log 2>&1; then
    echo "sanitizers: $(grep -m1 -o '[0-9]* tests from [0-9]* test suites ran' build/fuzz/unit.log)," \
      "all passed under ASan+UBSan"
  else
    echo "sanitizers: unit tests FAILED under ASan+UBSan (log build/fuzz/unit.log):"
    grep -E -A12 "ERROR|runtime error|FAILED|Failure" build/fuzz/unit.log | head -40
    status=1
  fi
fi
for t in "${targets[@]}"; do
  work=$(mktemp -d)
  cp tests/fuzz/corpus/$t/* "$work/" 2>/dev/null || true
  if build/fuzz/bin/$t -max_total_time="$secs" -rss_limit_mb=2560 -max_len=65536 \
    -print_final_stats=1 -artifact_prefix="build/fuzz/findings/$t-" "$work" >"build/fuzz/$t.log" 2>&1; then
    runs=$(grep -m1 "stat::number_of_executed_units" "build/fuzz/$t.log" | awk '{print $2}')
    echo "fuzz: $t: ${runs:-?} executions in $secs s, no findings"
  else
    echo "fuzz: $t: FINDING (log build/fuzz/$t.log):"
    grep -E -A12 "ERROR|runtime error|uncaught|deadly" "build/fuzz/$t.log" | head -40
    status=1
  fi
  rm -rf "$work"
done
exit $status
