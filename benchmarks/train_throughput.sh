#!/usr/bin/env bash
# Training throughput of the default MLP (784-300-100-10, batch 50, SGD momentum 0.9) on MNIST:
# dtrain against the same loop in PyTorch Python (benchmarks/pytorch_mlp.py) at 1 and 2 threads,
# and against the compute bound measured in the same run (benchmarks/compute_bound: the epoch's
# GEMM FLOPs / sgemm rate on all cores), alternating so that machine noise hits all alike.
# Prints a table and the ratios; --json FILE also writes them with the machine and versions.
#   [EPOCHS=N] benchmarks/train_throughput.sh [REPEATS] [--json FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/bench_args.sh
repeats=3
bench_args "benchmarks/train_throughput.sh [REPEATS] [--json FILE]" "$@"
command_line="benchmarks/train_throughput.sh $repeats${json:+ --json $json}"
epochs=${EPOCHS:-2}  # per process; each process reports its fastest epoch
data=build/mnist
[[ -x build/bin/dtrain && -x build/bin/compute_bound && -f $data/train-images-idx3-ubyte ]] || {
  echo "# build first and fetch MNIST: bash tools/build.sh && build/bin/dtrain data fetch mnist --into build/mnist" >&2
  exit 2
}
/usr/bin/python3 -c 'import torch' 2>/dev/null || bash tools/install-deps.sh --benchmarks >&2
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

dtrain_epoch() {  # threads, tracking (on|off) -> epoch seconds
  local tracking=(--workspace none --progress never)
  # Tracking on: run store + per-step losses, TensorBoard events and the progress line drawn.
  [[ ${2:-off} == on ]] && tracking=(--workspace "$tmp/ws" --progress always --log-every-steps 100)
  build/bin/dtrain train --data-dir "$data" --epochs "$epochs" --checkpoint-every 0 \
    --threads "$1" "${tracking[@]}" --output-dir "$tmp/out" >/dev/null 2>&1
  python3 -c 'import json,sys; print(min(json.loads(l)["epoch_seconds"] for l in open(sys.argv[1])))' "$tmp/out/metrics.jsonl"
}
python_epoch() {  # threads, extra env -> epoch seconds
  env $2 /usr/bin/python3 benchmarks/pytorch_mlp.py "$data" --threads "$1" --epochs "$epochs" |
    python3 -c 'import json,sys; print(min(e["epoch_seconds"] for e in json.load(sys.stdin)["epochs"]))'
}
bound_epoch() {  # -> compute-bound epoch seconds (all cores)
  build/bin/compute_bound --repeats 5 --json "$tmp/bound.json" >/dev/null
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["results"]["bound_seconds"])' "$tmp/bound.json"
}
best() { sort -g | head -n1; }

echo "# train_throughput: MLP 784-300-100-10, batch 50, 60000 samples/epoch, fastest epoch of $repeats processes x $epochs epochs"
configs=("dtrain threads=1" "dtrain threads=2" "dtrain threads=2 tracking=on" "pytorch threads=1"
         "pytorch threads=2" "pytorch threads=2 OMP_WAIT_POLICY=PASSIVE")
for c in "${configs[@]}" bound; do : > "$tmp/${c// /_}"; done
for ((i = 0; i < repeats; i++)); do
  bound_epoch >> "$tmp/bound"
  dtrain_epoch 1 >> "$tmp/dtrain_threads=1"
  python_epoch 1 "" >> "$tmp/pytorch_threads=1"
  dtrain_epoch 2 >> "$tmp/dtrain_threads=2"
  dtrain_epoch 2 on >> "$tmp/dtrain_threads=2_tracking=on"
  python_epoch 2 "" >> "$tmp/pytorch_threads=2"
  python_epoch 2 "OMP_WAIT_POLICY=PASSIVE" >> "$tmp/pytorch_threads=2_OMP_WAIT_POLICY=PASSIVE"
done
printf "# %-40s %8s %12s\n" "configuration" "epoch_s" "samples/s"
declare -A result
for c in "${configs[@]}"; do
  s=$(best < "$tmp/${c// /_}")
  result[$c]=$s
  printf "  %-40s %8.3f %12.0f\n" "$c" "$s" "$(python3 -c "print(60000/$s)")"
done
bound=$(best < "$tmp/bound")
printf "  %-40s %8.3f %12.0f\n" "compute bound (fastest of $repeats)" "$bound" "$(python3 -c "print(60000/$bound)")"
fastest_py=$(printf "%s\n" "${result[pytorch threads=1]}" "${result[pytorch threads=2]}" \
  "${result[pytorch threads=2 OMP_WAIT_POLICY=PASSIVE]}" | best)
fastest_dt=$(printf "%s\n" "${result[dtrain threads=1]}" "${result[dtrain threads=2]}" | best)
ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }
echo "# dtrain threads=2 vs its own threads=1:               $(ratio "${result[dtrain threads=1]}" "${result[dtrain threads=2]}")x"
echo "# dtrain threads=2 epoch / compute bound (target <= 1.4): $(ratio "${result[dtrain threads=2]}" "$bound")x"
echo "# best PyTorch / best dtrain (target >= 2):             $(ratio "$fastest_py" "$fastest_dt")x"
echo "# speedup at the same threads=1:                        $(ratio "${result[pytorch threads=1]}" "${result[dtrain threads=1]}")x"
echo "# tracking overhead (workspace + TensorBoard + progress vs --workspace none, threads=2): $(
  python3 -c "print(f'{(${result[dtrain threads=2 tracking=on]}/${result[dtrain threads=2]}-1)*100:+.1f} %')")"
if [[ -n $json ]]; then
  {
    echo "{\"epochs_per_process\": $epochs, \"repeats\": $repeats, \"epoch_seconds\": {"
    first=1
    for c in "${configs[@]}"; do
      ((first)) || echo ","; first=0
      printf '"%s": %s' "$c" "${result[$c]}"
    done
    echo "}, \"compute_bound_seconds\": $bound,"
    echo "\"ratios\": {\"epoch_over_bound\": $(ratio "${result[dtrain threads=2]}" "$bound"),"
    echo "\"best_pytorch_over_best_dtrain\": $(ratio "$fastest_py" "$fastest_dt"),"
    echo "\"threads2_over_threads1\": $(ratio "${result[dtrain threads=1]}" "${result[dtrain threads=2]}")}}"
  } > "$tmp/results.json"
  python3 benchmarks/bench_report.py --benchmark train_throughput --command "$command_line" \
    --results "$tmp/results.json" --out "$json"
  echo "# wrote $json"
fi
