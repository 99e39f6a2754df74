#!/usr/bin/env bash
# Parameter-server step throughput against ring allreduce at the same global batch, in one run:
# 1 ps + 2 workers (sync and async, gradients pushed as float32 and as float16 with
# --compression fp16) vs mpirun -np 2 --distributed ring, MNIST, default MLP, batch 50 per
# worker, 1 thread per process, best of REPEATS, alternating.
# The transport's floor is measured in the same run: build/bin/loopback_floor sends the same bytes
# a sync step moves (each worker's push, the ps's replies) over TCP on 127.0.0.1 with nothing else,
# and the fastest a ps over TCP could go here is 1 / (the workers' compute a step + that floor).
# --json FILE also writes the results with the machine and versions.
#   benchmarks/ps_throughput.sh [REPEATS] [--json FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/bench_args.sh
repeats=3
bench_args "benchmarks/ps_throughput.sh [REPEATS] [--json FILE]" "$@"
data=build/mnist
[[ -x build/bin/dtrain && -x build/bin/loopback_floor && -f $data/train-images-idx3-ubyte ]] || { echo "# build and fetch MNIST first" >&2; exit 2; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
flags="--data-dir $data --epochs 1 --threads 1 --checkpoint-every 0 --workspace none"
epoch_of() {
  python3 -c 'import json,sys; m=json.loads(open(sys.argv[1]).readline()); print(m["epoch_seconds"], m["steps"], m["sync_seconds"])' "$1/metrics.jsonl"
}
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
read -r ring_s ring_steps _ < <(sort -g "$tmp/ring.times" | head -n1)
rows=""
for c in "${configs[@]}"; do
  read -r s steps _ < <(sort -g "$tmp/$c.times" | head -n1)
  name=$c; [[ $c == ring ]] && name="ring allreduce (2 ranks)"; [[ $c != ring ]] && name="ps ${c/-/ } (1 ps, 2 workers)"
  printf "  %-33s %10.3f %8d %12.1f %7.2fx\n" "$name" "$s" "$steps" "$(python3 -c "print($steps/$s)")" \
    "$(python3 -c "print(($steps/$s)/($ring_steps/$ring_s))")"
  rows+="${rows:+,}\"$c\": {\"epoch_seconds\": $s, \"steps\": $steps, \"vs_ring\": $(python3 -c "print(($steps/$s)/($ring_steps/$ring_s))")}"
done
echo "# targets: ps sync >= 0.6x ring, async >= 0.7x (fp16: gradients pushed as float16, values returned as float32)"
# The floor: the model's values are 4 bytes each way a step (2 pushed as float16), 1 ps x 2 workers.
values=$(python3 -c '
import json, sys
a = json.load(open(sys.argv[1]))["architecture"]
dims = [a["in_features"]] + a["hidden_sizes"] + [a["classes"]]
print(sum(i * o + o for i, o in zip(dims, dims[1:])))' "$tmp/sync/model/model.json")
floors=""
for c in sync sync-fp16; do
  push=$((values * 4)); [[ $c == *fp16 ]] && push=$((values * 2))
  us=$(build/bin/loopback_floor --workers 2 --push-bytes $push --reply-bytes $((values * 4)) --rounds 600 \
    --repeats 3 | awk '/us_per_round/ {print $2}')
  # The workers' compute a step in this configuration's best run: its epoch less its sync time.
  read -r s steps sync < <(sort -g "$tmp/$c.times" | head -n1)
  read -r compute_us ceiling vs_ring < <(python3 -c "
c = ($s - $sync) / $steps * 1e6; ceil = 1e6 / (c + $us)
print(c, ceil, ceil / ($ring_steps / $ring_s))")
  printf "# TCP floor, %-9s %7.1f us a step (loopback_floor, %d bytes pushed and %d replied per worker)\n" \
    "$c:" "$us" "$push" "$((values * 4))"
  printf "#   + the workers' compute %.1f us a step: a ps over TCP here can reach at most %.1f steps/s = %.2fx ring\n" \
    "$compute_us" "$ceiling" "$vs_ring"
  floors+="${floors:+,}\"$c\": {\"tcp_floor_us\": $us, \"compute_us\": $compute_us, \"ceiling_steps_per_second\": $ceiling, \"ceiling_vs_ring\": $vs_ring}"
done
if [[ -n $json ]]; then
  echo "{\"repeats\": $repeats, $rows, \"tcp_floor\": {$floors}}" > "$tmp/results.json"
  python3 benchmarks/bench_report.py --benchmark ps_throughput --results "$tmp/results.json" \
    --out "$json" --command "benchmarks/ps_throughput.sh $repeats --json $json"
  echo "# wrote $json"
fi
