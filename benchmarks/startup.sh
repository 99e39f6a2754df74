#!/usr/bin/env bash
# Start-up (issue 13, target 2): `dtrain train --epochs 1` wall time minus its epoch and evaluation
# time, and where that time goes, against loading LibTorch alone, measured in the same run:
#   torch_load_probe          an empty program linked with LibTorch, its libraries in their own order
#   torch_load_probe_ordered  the same with cmake/StartupLinkOrder.cmake's order (as dtrain links)
#   dtrain --version          dtrain's load, argument handling and exit
#   dtrain train --epochs 1   phases from its log lines: load and set-up (to the first line), data,
#                             before the first step, outputs (checkpoint, model, ONNX, run.json,
#                             curves.png, run record), exit
# Each is run REPEATS times, alternating; the table shows medians. --json FILE also writes them.
#   benchmarks/startup.sh [REPEATS] [--json FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/bench_args.sh
repeats=7
bench_args "benchmarks/startup.sh [REPEATS] [--json FILE]" "$@"
data=build/mnist
for b in dtrain torch_load_probe torch_load_probe_ordered; do
  [[ -x build/bin/$b ]] || { echo "# build first: bash tools/build.sh (build/bin/$b is missing)" >&2; exit 2; }
done
[[ -f $data/train-images-idx3-ubyte ]] || { echo "# fetch MNIST first: build/bin/dtrain data fetch mnist --into $data" >&2; exit 2; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
python3 - "$repeats" "$data" "$tmp" <<'EOF' | tee "$tmp/table.txt"
import json, os, re, shutil, statistics, subprocess, sys, time
repeats, data, tmp = int(sys.argv[1]), sys.argv[2], sys.argv[3]

def wall(cmd):
    t = time.monotonic()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.monotonic() - t

def clock(line):  # "[HH:MM:SS.mmm]" -> seconds since midnight (local time, as spdlog writes it)
    h, m, s = re.match(r"\[(\d\d):(\d\d):(\d\d\.\d+)\]", line).groups()
    return int(h) * 3600 + int(m) * 60 + float(s)

def train():
    out = os.path.join(tmp, "out")
    shutil.rmtree(out, ignore_errors=True)
    cmd = ["build/bin/dtrain", "train", "--data-dir", data, "--epochs", "1", "--output-dir", out,
           "--workspace", os.path.join(tmp, "ws"), "--progress", "never"]
    lt = time.localtime()
    start_wall = time.time()
    start = time.monotonic()
    log = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         check=True).stderr.splitlines()
    total = time.monotonic() - start
    day = start_wall - time.mktime(lt[:3] + (0, 0, 0) + lt[6:])  # start, seconds since midnight
    at = lambda key: next(clock(l) - day for l in log if key in l)
    m = json.loads(open(os.path.join(out, "metrics.jsonl")).readline())
    first, model, epoch_line, done = at("] device:"), at("] model:"), at("] epoch 1/1"), at("] done in")
    compute = m["epoch_seconds"] + m["validation_seconds"]
    return {"overhead": total - compute, "load_and_setup": first, "data": model - first,
            "before_first_step": epoch_line - compute - model, "outputs": done - epoch_line,
            "exit": total - done, "epoch_and_evaluation": compute, "total": total}

rows = {k: [] for k in ("torch_load_probe", "torch_load_probe_ordered", "dtrain --version")}
phases = []
for _ in range(repeats):
    rows["torch_load_probe"].append(wall(["build/bin/torch_load_probe"]))
    rows["torch_load_probe_ordered"].append(wall(["build/bin/torch_load_probe_ordered"]))
    rows["dtrain --version"].append(wall(["build/bin/dtrain", "--version"]))
    phases.append(train())
med = {k: statistics.median(v) for k, v in rows.items()}
ph = {k: statistics.median(p[k] for p in phases) for k in phases[0]}
print(f"# startup: median of {repeats}, seconds")
for k, v in med.items():
    print(f"  {k:<44} {v:7.3f}")
print(f"  {'dtrain train --epochs 1, whole process':<44} {ph['total']:7.3f}")
for k in ("load_and_setup", "data", "before_first_step", "epoch_and_evaluation", "outputs", "exit"):
    print(f"    {k.replace('_', ' '):<42} {ph[k]:7.3f}")
print(f"# start-up = whole process - epoch - evaluation (target <= 0.5 s): {ph['overhead']:.3f} s")
print(f"# LibTorch load, own order / StartupLinkOrder: "
      f"{med['torch_load_probe'] / med['torch_load_probe_ordered']:.2f}x")
json.dump({"repeats": repeats, "seconds": med, "train_phases": ph}, open(os.path.join(tmp, "results.json"), "w"))
EOF
if [[ -n $json ]]; then
  python3 benchmarks/bench_report.py --benchmark startup --results "$tmp/results.json" \
    --out "$json" --command "benchmarks/startup.sh $repeats --json $json"
  echo "# wrote $json"
fi
