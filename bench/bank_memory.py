#!/usr/bin/python3
"""Peak memory of a large memory bank: rank 0's peak RSS with a 500,000-entry bank, against the same run
with batch negatives (the baseline: the same data, model and evaluation, no bank), side by side in one invocation.

Synthetic Fashion-MNIST-format data (500,000 random 28x28 images: the bank has one entry per training image) is
written to a temporary directory; each side trains a few steps and evaluates on a small test split. Prints each
side's peak RSS after training and at the end (result.json train_peak_rss_mib / peak_rss_mib, VmHWM), the bank's
and the model's size, and the ratio (bank side - baseline) / (bank + model) -- the target is <= 1.5.

  bench/bank_memory.py [--images 500000] [--build build]
"""
import argparse
import gzip
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np


def write_idx(prefix, images, labels):
    with gzip.open(prefix + "-images-idx3-ubyte.gz", "wb", compresslevel=1) as f:
        f.write(struct.pack(">IIII", 0x803, len(images), 28, 28))
        f.write(images.tobytes())
    with gzip.open(prefix + "-labels-idx1-ubyte.gz", "wb", compresslevel=1) as f:
        f.write(struct.pack(">II", 0x801, len(labels)))
        f.write(labels.tobytes())


def synthetic_data(root, n):
    rng = np.random.default_rng(0)
    write_idx(os.path.join(root, "train"), rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
              rng.integers(0, 10, n, dtype=np.uint8))
    write_idx(os.path.join(root, "t10k"), rng.integers(0, 256, (1000, 28, 28), dtype=np.uint8),
              rng.integers(0, 10, 1000, dtype=np.uint8))


def run(train, data, out, negatives):
    cmd = [train, "--dataset", "fashion_mnist", "--data_dir", data, "--negatives", negatives, "--max_steps", "20",
           "--batch_size", "256", "--linear_epochs", "0", "--curve_train_samples", "0", "--threads", "2",
           "--log_every_steps", "10", "--out_dir", out]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(os.path.join(out, "result.json")) as f:
        return json.load(f)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=500000)
    parser.add_argument("--build", default=os.path.join(os.path.dirname(__file__), "..", "build"))
    args = parser.parse_args()
    train = os.path.join(args.build, "trainer", "tempered-train")
    root = tempfile.mkdtemp(prefix="tempered-bank-memory-")
    try:
        synthetic_data(root, args.images)
        baseline = run(train, root, os.path.join(root, "batch"), "batch")
        bank = run(train, root, os.path.join(root, "bank"), "memory_bank")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    embed_dim = bank["config"]["model"]["embed_dim"]
    bank_mib = args.images * embed_dim * 4 / 2**20
    model_mib = float(os.environ.get("TEMPERED_MODEL_MIB", "0")) or model_size_mib(train)
    print("images %d, embed_dim %d: bank %.1f MiB, model (parameters, gradients, momentum) %.1f MiB"
          % (args.images, embed_dim, bank_mib, model_mib))
    for name, r in (("batch negatives (baseline)", baseline), ("memory bank", bank)):
        print("%-27s peak RSS after training %8.1f MiB, at the end %8.1f MiB"
              % (name, r["train_peak_rss_mib"], r["peak_rss_mib"]))
    for when in ("train_peak_rss_mib", "peak_rss_mib"):
        extra = bank[when] - baseline[when]
        ratio = extra / (bank_mib + model_mib)
        print("%-20s bank side - baseline = %.1f MiB = %.2fx (bank + model)  %s"
              % (when, extra, ratio, "PASS" if ratio <= 1.5 else "FAIL (target <= 1.5)"))


def model_size_mib(train):
    """Parameters x 3 (values, gradients, SGD momentum) of the default model, from a 1-step model.pt."""
    import torch  # Debian's python3-torch
    root = tempfile.mkdtemp(prefix="tempered-model-size-")
    try:
        subprocess.run([train, "--train_subset", "512", "--test_subset", "256", "--max_steps", "1", "--batch_size",
                        "64", "--linear_epochs", "0", "--threads", "2", "--out_dir", root],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        params = sum(p.numel() for p in torch.jit.load(os.path.join(root, "model.pt")).parameters())
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return params * 4 * 3 / 2**20


if __name__ == "__main__":
    sys.exit(main())
