#!/usr/bin/env bash
# Parameter-server step throughput against ring allreduce at the same global batch, in one run:
# 1 ps + 2 workers (sync and async, gradients pushed as float32 and as float16 with
# --compression fp16) vs mpirun -np 2 --distributed ring, MNIST, default MLP, batch 50 per
# worker, 1 thread per process, best of REPEATS, alternating.
# --json FILE also writes the results with the machine and versions.
#   benchmarks/ps_throughput.sh [REPEATS] [--json FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/bench_args.sh
repeats=3
bench_args "benchmarks/ps_throughput.sh [REPEATS] [--json FILE]" "$@"
data=build/mnist
[[ -x build/bin/dtrain && -f $data/train-images-idx3-ubyte ]] || { echo "# build and fetch MNIST first" >&2; exit 2; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
flags="--data-dir $data --epochs 1 --threads 1 --checkpoint-every 0 --workspace none"
epoch_of() { python3 -c 'import json,sys; m=json.loads(open(sys.argv[1]).readline()); print(m["epoch_seconds"], m["steps"])' "$1/metrics.jsonl"; }
run() {
  case $1 in
    ring) mpirun --oversubscribe -np 2 build/bin/dtrain train --distributed ring $flags --output-dir "$tmp/$1" ;;
    sync|async) build/bin/dtrain cluster run --ps 1 --workers 2 -- --ps-mode "$1" $flags --output-dir "$tmp/$1" ;;
    sync-fp16|async-fp16) build/bin/dtrain cluster run --ps 1 --workers 2 -- --ps-mode "${1%-fp16}" \
      --compression fp16 $flags --output-dir "$tmp/$1" ;;
  esac >/dev/null 2>&1
  epoch_of "$tmp/$1"
}
configs=(ring sync async sync-fp16 async-fp16)
for c in "${configs[@]}"; do : > "$tmp/$c.times"; done
for ((i = 0; i < repeats; i++)); do for c in "${configs[@]}"; do run $c >> "$tmp/$c.times"; done; done
echo "# ps_throughput: MLP 784-300-100-10, 2 workers x batch 50 (global 100), 1 thread each, best of $repeats"
printf "# %-33s %10s %8s %12s %8s\n" configuration epoch_s steps steps/s vs_ring
read -r ring_s ring_steps < <(sort -g "$tmp/ring.times" | head -n1)
rows=""
for c in "${configs[@]}"; do
  read -r s steps < <(sort -g "$tmp/$c.times" | head -n1)
  name=$c; [[ $c == ring ]] && name="ring allreduce (2 ranks)"; [[ $c != ring ]] && name="ps ${c/-/ } (1 ps, 2 workers)"
  printf "  %-33s %10.3f %8d %12.1f %7.2fx\n" "$name" "$s" "$steps" "$(python3 -c "print($steps/$s)")" \
    "$(python3 -c "print(($steps/$s)/($ring_steps/$ring_s))")"
  rows+="${rows:+,}\"$c\": {\"epoch_seconds\": $s, \"steps\": $steps, \"vs_ring\": $(python3 -c "print(($steps/$s)/($ring_steps/$ring_s))")}"
done
echo "# targets: ps sync >= 0.6x ring, async >= 0.7x (fp16: gradients pushed as float16, values returned as float32)"
if [[ -n $json ]]; then
  echo "{\"repeats\": $repeats, $rows}" > "$tmp/results.json"
  python3 benchmarks/bench_report.py --benchmark ps_throughput --results "$tmp/results.json" \
    --out "$json" --command "benchmarks/ps_throughput.sh $repeats --json $json"
  echo "# wrote $json"
fi
