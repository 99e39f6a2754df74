#!/usr/bin/env python3
"""Baseline for benchmarks/train_throughput: the same MLP, data and optimiser as `dtrain train`,
as the usual PyTorch Python loop (tensors in memory, index a shuffled batch, forward, loss,
backward, step). Prints one JSON line with epoch seconds and samples/s.

Usage: pytorch_mlp.py DATA_DIR [--epochs N] [--batch-size B] [--threads T] [--max-steps S]
"""
import argparse
import json
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def read_idx(path):
    with open(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        sys.exit(f"{path}: not an unsigned-byte IDX file")
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("data_dir")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--max-steps", type=int, default=0)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(42)
    x = torch.from_numpy(read_idx(os.path.join(a.data_dir, "train-images-idx3-ubyte")).copy())
    x = x.reshape(x.shape[0], -1)
    y = torch.from_numpy(read_idx(os.path.join(a.data_dir, "train-labels-idx1-ubyte")).copy()).long()
    model = nn.Sequential(nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(),
                          nn.Linear(100, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    results = []
    for epoch in range(a.epochs):
        perm = torch.randperm(x.shape[0])
        start = time.perf_counter()
        steps = 0
        seen = 0
        for i in range(0, x.shape[0], a.batch_size):
            idx = perm[i:i + a.batch_size]
            xb = x[idx].float().div_(255.0)
            yb = y[idx]
            opt.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            steps += 1
            seen += idx.numel()
            if a.max_steps and steps >= a.max_steps:
                break
        secs = time.perf_counter() - start
        results.append({"epoch": epoch + 1, "epoch_seconds": secs, "steps": steps,
                        "samples_per_second": seen / secs, "loss": float(loss)})
    print(json.dumps({"baseline": "pytorch-python", "torch": torch.__version__,
                      "threads": a.threads, "batch_size": a.batch_size, "epochs": results}))


if __name__ == "__main__":
    main()
