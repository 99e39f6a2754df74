#!/usr/bin/env python3
"""Wraps a benchmark's results with what makes runs comparable: the machine (cores, CPU model,
memory, BLAS), the versions (dtrain, LibTorch, MPI, Python PyTorch when used) and the command.

    bench_report.py --benchmark NAME --command "CMD" --results RESULTS.json --out OUT.json

RESULTS.json is the benchmark's own JSON; OUT.json gets {"benchmark", "command", "machine",
"versions", "results", "date"}. The C++ benchmarks write the same layout (benchmarks/bench_info.h).
"""
import argparse
import datetime
import json
import os
import platform
import subprocess


def _first(path, prefix):
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(prefix):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _run(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def machine():
    mem_kb = _first("/proc/meminfo", "MemTotal")
    blas = None
    for candidate in ("/usr/lib/x86_64-linux-gnu/libblas.so.3", "/usr/lib/aarch64-linux-gnu/libblas.so.3"):
        if os.path.exists(candidate):
            blas = os.path.realpath(candidate)
    return {
        "cores": os.cpu_count(),
        "cpu_model": _first("/proc/cpuinfo", "model name"),
        "memory_gib": round(int(mem_kb.split()[0]) / 2**20, 1) if mem_kb else None,
        "blas": blas,
        "kernel": platform.release(),
        "hostname": platform.node(),
    }


def versions(root):
    out = {"dtrain": _run([os.path.join(root, "build/bin/dtrain"), "--version"])}
    mpi = _run(["mpirun", "--version"])
    out["mpi"] = mpi.splitlines()[0] if mpi else None
    torch_version = _run(["/usr/bin/python3", "-c", "import torch; print(torch.__version__)"])
    out["python_torch"] = torch_version or None
    out["python"] = platform.python_version()
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--benchmark", required=True)
    p.add_argument("--command", required=True)
    p.add_argument("--results", required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    with open(a.results) as f:
        results = json.load(f)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    report = {
        "benchmark": a.benchmark,
        "command": a.command,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(root),
        "results": results,
    }
    tmp = a.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    os.replace(tmp, a.out)


if __name__ == "__main__":
    main()
