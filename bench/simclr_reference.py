#!/usr/bin/python3
"""SimCLR in plain PyTorch: the baseline of the train_vs_pytorch benchmark (bench/README.md).

The same work per step as tempered-train's defaults (common/config.cc, trainer/model/model.cc, trainer/data/data.cc):
  - data: Fashion-MNIST (28x28 grayscale, uint8 in memory), a random batch of B images, two views each;
  - augmentation, batched in torch with per-image random parameters: random resized crop (area 0.2-1, aspect
    3/4-4/3, torchvision's 10 tries then the centre crop) resized bilinearly back to 28x28, horizontal flip
    (p = 0.5, folded into the crop's affine map), brightness and contrast jitter (factors in [0.6, 1.4], applied in a
    random order per image);
  - model: (x - 0.5) * 4 -> 4 x [conv3x3 (no bias) -> BatchNorm -> ReLU] with 32, 64 (stride 2), 128 (stride 2), 128
    channels -> global average pool -> BatchNorm1d -> Linear(128, 128) -> L2 normalise;
  - loss: InfoNCE over the 2B views (each view's positive is its other view, every other view a negative,
    tau = 0.2), the mean over 2B anchors;
  - SGD (lr 0.06 with cosine decay, momentum 0.9, weight decay 5e-4).

It gets its best settings, so that a win over it is a win: the allocator environment of docs/cpu.md (it re-executes itself
with MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=... when they are missing), torch.set_num_threads(--threads),
OPENBLAS_NUM_THREADS / OMP_NUM_THREADS = --threads, and no autograd anomaly or profiling. --channels_last is PyTorch's
own recipe for faster CPU training of CNNs (model.to(memory_format=torch.channels_last) and channels_last inputs);
train_bench.py runs the reference both ways and compares against the faster.

--ranks N runs it as N processes of --threads threads each (torch.distributed over gloo, launched by this script):
each rank augments B / N images, all-gathers the embeddings with their gradient (torch.distributed.nn), computes
the loss of its anchors against all 2B views, and DistributedDataParallel averages the gradients (bucketed, overlapped
with the backward): the layout tempered-train is compared in, one process per core, given to the reference too.
Batch norm then normalises over each rank's views, as tempered-train's --norm batch does.

Prints one JSON line: {"images_per_second": ..., "step_seconds_median": ..., ...}; images/s is the timed images
over the timed seconds, after --warmup steps.
"""
import argparse
import gzip
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.nn
import torch.nn as nn
import torch.nn.functional as F

TUNED_MALLOC = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "68719476736"}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch_size", type=int, default=256, help="images per step (two views each)")
    p.add_argument("--steps", type=int, default=30, help="timed steps")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads")
    p.add_argument("--train_subset", type=int, default=10240, help="first N training images")
    p.add_argument("--data_dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--malloc", choices=["tuned", "default"], default="tuned",
                   help="tuned: the allocator environment of docs/cpu.md (the default)")
    p.add_argument("--channels_last", action="store_true",
                   help="NHWC model and inputs (torch.channels_last), else NCHW")
    p.add_argument("--bf16", action="store_true",
                   help="the model under bf16 autocast (torch.autocast cpu), the loss in fp32: tempered-train --bf16")
    p.add_argument("--ranks", type=int, default=1,
                   help="processes, --threads threads each (torch.distributed, gloo); the batch is split")
    p.add_argument("--seed", type=int, default=1)
    return p.parse_args()


def launch_ranks(args):
    """Runs this script as --ranks processes of one torch.distributed job; prints rank 0's line."""
    import socket
    import subprocess
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in range(args.ranks):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(args.ranks), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port))
        procs.append(subprocess.Popen([sys.executable] + sys.argv, env=env, stdout=subprocess.PIPE, text=True))
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode != 0 for p in procs):
        sys.exit("simclr_reference: a rank failed (exit status %s)" % [p.returncode for p in procs])
    print(outs[0].strip().splitlines()[-1])


def ensure_environment(args):
    """glibc reads MALLOC_* at start-up and OpenBLAS/OpenMP their thread counts at load: re-exec when missing."""
    want = {"OPENBLAS_NUM_THREADS": str(args.threads), "OMP_NUM_THREADS": str(args.threads)}
    if args.malloc == "tuned":
        want.update(TUNED_MALLOC)
    if all(os.environ.get(k) == v for k, v in want.items()):
        return
    env = dict(os.environ, **want)
    os.execve(sys.executable, [sys.executable] + sys.argv, env)


def load_images(data_dir, limit):
    with gzip.open(os.path.join(data_dir, "train-images-idx3-ubyte.gz"), "rb") as f:
        data = f.read()
    count, rows, cols = (int.from_bytes(data[4 * i:4 * i + 4], "big") for i in (1, 2, 3))
    if limit:
        count = min(count, limit)
    pixels = np.frombuffer(data, dtype=np.uint8, count=count * rows * cols, offset=16)
    return torch.from_numpy(pixels.copy()).view(count, 1, rows, cols)


def crop_params(b, size, gen):
    """torchvision RandomResizedCrop.get_params, batched: (top, left, h, w) per image."""
    area = float(size * size)
    tries = 10
    scale = torch.empty(b, tries).uniform_(0.2, 1.0, generator=gen) * area
    log_ratio = torch.empty(b, tries).uniform_(math.log(3 / 4), math.log(4 / 3), generator=gen)
    ratio = log_ratio.exp()
    w = torch.sqrt(scale * ratio).round()
    h = torch.sqrt(scale / ratio).round()
    ok = (w > 0) & (w <= size) & (h > 0) & (h <= size)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((b,), -1, dtype=torch.long))
    rows = torch.arange(b)
    w = torch.where(first >= 0, w[rows, first.clamp(min=0)], torch.full((b,), float(size)))
    h = torch.where(first >= 0, h[rows, first.clamp(min=0)], torch.full((b,), float(size)))
    top = (torch.rand(b, generator=gen) * (size - h + 1)).floor()
    left = (torch.rand(b, generator=gen) * (size - w + 1)).floor()
    return top, left, h, w


def augment(images, gen):
    """(b, 1, S, S) uint8 -> (b, 1, S, S) float in [0, 1], one random view per image."""
    b, _, size, _ = images.shape
    x = images.float().div_(255)
    top, left, h, w = crop_params(b, size, gen)
    flip = torch.rand(b, generator=gen) < 0.5
    # Output pixel u (normalised, align_corners=False) reads source (w / S) u + (2 left + w) / S - 1: the crop box
    # resized to S x S; a flip negates u.
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = torch.where(flip, -w, w) / size
    theta[:, 0, 2] = (2 * left + w) / size - 1
    theta[:, 1, 1] = h / size
    theta[:, 1, 2] = (2 * top + h) / size - 1
    grid = F.affine_grid(theta, (b, 1, size, size), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    # Colour jitter on grayscale: brightness and contrast, in a random order per image.
    brightness = torch.empty(b, 1, 1, 1).uniform_(0.6, 1.4, generator=gen)
    contrast = torch.empty(b, 1, 1, 1).uniform_(0.6, 1.4, generator=gen)
    brightness_first = (torch.rand(b, generator=gen) < 0.5).view(b, 1, 1, 1)

    def adjust_brightness(t):
        return (t * brightness).clamp_(0, 1)

    def adjust_contrast(t):
        return (contrast * t + (1 - contrast) * t.mean((1, 2, 3), keepdim=True)).clamp_(0, 1)

    return torch.where(brightness_first, adjust_contrast(adjust_brightness(x)),
                       adjust_brightness(adjust_contrast(x)))


class SmallCnn(nn.Module):
    def __init__(self, width=32, embed_dim=128):
        super().__init__()
        layers, channels = [], 1
        for out, stride in ((width, 1), (2 * width, 2), (4 * width, 2), (4 * width, 1)):
            layers += [nn.Conv2d(channels, out, 3, stride, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            channels = out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.backbone = nn.Sequential(*layers)
        # trainer/model/model.cc: with batch norm, the pooled features are batch-normalised before the linear head.
        self.head = nn.Sequential(nn.BatchNorm1d(channels), nn.Linear(channels, embed_dim))

    def forward(self, images):
        return F.normalize(self.head(self.backbone((images - 0.5) * 4.0)), dim=1)


def info_nce(z, tau, rank=0, world=1):
    """z (2b, d), this rank's rows [view 0; view 1]: InfoNCE of its 2b anchors against every other view of the
    global batch (ranks' rows concatenated in rank order), averaged over the 2b anchors. The all-gather's backward
    sums every rank's gradient of this rank's rows and DistributedDataParallel averages over the ranks: the gradient
    of the mean over all 2B anchors."""
    n = z.shape[0]
    candidates = z
    if world > 1:
        candidates = torch.cat(torch.distributed.nn.functional.all_gather(z))
    logits = z @ candidates.t() / tau
    local = torch.arange(n)
    logits[local, local + rank * n] = float("-inf")
    positive = (local + n // 2) % n + rank * n
    return F.cross_entropy(logits, positive)


def main():
    args = parse_args()
    ensure_environment(args)
    if args.ranks > 1 and "RANK" not in os.environ:
        return launch_ranks(args)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)  # the same initial parameters on every rank
    gen = torch.Generator().manual_seed(args.seed + rank)
    images = load_images(args.data_dir, args.train_subset)
    model = SmallCnn()
    layout = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=layout)
    model.train()
    local_batch = args.batch_size // world
    if world > 1:
        dist.init_process_group("gloo", rank=rank, world_size=world)
        model = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.06, momentum=0.9, weight_decay=5e-4)
    total = args.warmup + args.steps
    step_seconds = []
    timed_start = None
    for step in range(total):
        if step == args.warmup:
            timed_start = time.perf_counter()
        start = time.perf_counter()
        index = torch.randint(0, images.shape[0], (local_batch,), generator=gen)
        batch = images.index_select(0, index)
        views = torch.cat([augment(batch, gen), augment(batch, gen)]).contiguous(memory_format=layout)
        for group in opt.param_groups:
            group["lr"] = 0.06 * 0.5 * (1 + math.cos(math.pi * step / total))
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            z = model(views)
        loss = info_nce(z.float(), 0.2, rank, world)
        loss.backward()
        opt.step()
        loss_value = loss.item()
        if step >= args.warmup:
            step_seconds.append(time.perf_counter() - start)
    seconds = time.perf_counter() - timed_start
    step_seconds.sort()
    print(json.dumps({
        "images_per_second": args.steps * args.batch_size / seconds,
        "step_seconds_median": step_seconds[len(step_seconds) // 2],
        "timed_steps": args.steps, "batch_size": args.batch_size, "threads": torch.get_num_threads(),
        "malloc": args.malloc, "channels_last": args.channels_last, "bf16": args.bf16, "ranks": world,
        "final_loss": loss_value,
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
