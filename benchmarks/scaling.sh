#!/usr/bin/env bash
# Data-parallel scaling on this machine: MNIST epoch time of the default MLP at 1 rank and at
# 2 ranks (mpirun, --distributed ring, 1 thread each, batch 50 per rank), best of REPEATS,
# alternating so machine noise hits both. Prints throughput, the share of the epoch spent in
# gradient sync, and the 2-rank/1-rank ratio; --json FILE also writes them with the machine.
#   benchmarks/scaling.sh [REPEATS] [ring|mpi] [--json FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/bench_args.sh
repeats=3 bench_words="ring mpi" bench_word=ring
bench_args "benchmarks/scaling.sh [REPEATS] [ring|mpi] [--json FILE]" "$@"
algo=$bench_word
data=build/mnist
[[ -x build/bin/dtrain && -f $data/train-images-idx3-ubyte ]] || { echo "# build and fetch MNIST first" >&2; exit 2; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
epoch() {  # np -> "epoch_seconds sync_seconds"
  mpirun --oversubscribe -np "$1" build/bin/dtrain train --distributed ring --allreduce "$algo" \
    --data-dir "$data" --epochs 1 --threads 1 --checkpoint-every 0 --workspace none \
    --output-dir "$tmp/out$1" >/dev/null 2>&1
  python3 -c 'import json,sys; m=json.loads(open(sys.argv[1]).readline()); print(m["epoch_seconds"], m["sync_seconds"])' "$tmp/out$1/metrics.jsonl"
}
: > "$tmp/1"; : > "$tmp/2"
for ((i = 0; i < repeats; i++)); do epoch 1 >> "$tmp/1"; epoch 2 >> "$tmp/2"; done
echo "# scaling: MLP 784-300-100-10, batch 50 per rank, 1 thread per rank, allreduce=$algo, best of $repeats"
printf "# %5s %10s %12s %10s %11s\n" ranks epoch_s samples/s sync_s sync_share
rows=""
for np in 1 2; do
  read -r s sync < <(sort -g "$tmp/$np" | head -n1)
  printf "  %5d %10.3f %12.0f %10.3f %10.1f%%\n" "$np" "$s" "$(python3 -c "print(60000/$s)")" "$sync" \
    "$(python3 -c "print(100*$sync/$s)")"
  eval "t$np=$s"
  rows+="${rows:+,}{\"ranks\": $np, \"epoch_seconds\": $s, \"sync_seconds\": $sync}"
done
ratio=$(python3 -c "print(f'{$t1/$t2:.2f}')")
echo "# throughput ratio 2 ranks / 1 rank: ${ratio}x (ideal 2.00x, target >= 1.8x)"
if [[ -n $json ]]; then
  echo "{\"allreduce\": \"$algo\", \"repeats\": $repeats, \"rows\": [$rows], \"throughput_ratio\": $ratio}" > "$tmp/results.json"
  python3 benchmarks/bench_report.py --benchmark scaling --results "$tmp/results.json" --out "$json" \
    --command "benchmarks/scaling.sh $repeats $algo --json $json"
  echo "# wrote $json"
fi
