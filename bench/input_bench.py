#!/usr/bin/python3
"""Input-pipeline benchmarks, each against its baseline side by side in one run (bench/README.md).

  input_pipeline  augmented views per second per core: Tempered's streamed image folder (bench/input_bench.cc:
                  libjpeg-turbo at a DCT scale, the crop from the decoded original, jitter, grayscale, flip, blur)
                  against torchvision's ImageFolder with the same transforms in DataLoader workers, on the same
                  generated ImageNet-like JPEGs (500 x 375, quality 90), each at its best thread / worker count.
                  Target: >= 2.0.
  input_memory    peak RSS of rank 0 of a 2-rank streamed run (tempered-train, RunResult.train_peak_rss_mib) on a
                  generated folder of 100,000 images against one of 10,000. Target: <= 1.1 (memory storage grows
                  with the images; streaming must not).
  input_wait      the share of a 2-rank ResNet-50 step at 224 px (streamed folder of generated 500 x 375 JPEGs,
                  two views, one thread per rank, data.prefetch_steps 1) that rank 0 waits for its views: the
                  "input wait" of tempered-train's progress lines after the first. Target: <= 0.05.

Prints "TARGET <name> <ratio> <target> PASS|FAIL" lines for bench/run.sh.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np


def write_folder(root, classes, per_class, size, quality, val_per_class=0, seed=0):
    """root/train/<class>/<i>.jpg (and val/): smooth random colour fields, as photographs compress."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    width, height = size
    for split, count in (("train", per_class), ("val", val_per_class)):
        for c in range(classes):
            folder = os.path.join(root, split, f"class{c:03d}")
            os.makedirs(folder, exist_ok=True)
            for i in range(count):
                small = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
                image = Image.fromarray(small).resize((width, height), Image.BILINEAR)
                image.save(os.path.join(folder, f"{i:06d}.jpg"), quality=quality)


def torchvision_views_per_second(root, image_size, batch, batches, workers):
    """torchvision's ImageFolder with Tempered's transforms (two views per image) through a DataLoader."""
    import torch
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder
    torch.set_num_threads(1)
    view = T.Compose([
        T.RandomResizedCrop(image_size, scale=(0.2, 1.0)),
        T.ColorJitter(0.4, 0.4, 0.4, 0.4),
        T.RandomGrayscale(0.2),
        T.RandomHorizontalFlip(),
        T.RandomApply([T.GaussianBlur(int(0.1 * image_size) // 2 * 2 + 1, (0.1, 2.0))], p=0.5),
        T.ToTensor(),
    ])
    data = ImageFolder(os.path.join(root, "train"), transform=lambda image: (view(image), view(image)))
    extra = {"persistent_workers": True, "prefetch_factor": 2} if workers else {}  # torch 1.13 refuses them at 0
    loader = torch.utils.data.DataLoader(data, batch_size=batch, shuffle=False, num_workers=workers, **extra)
    start, seen = None, 0
    for i, ((a, b), _) in enumerate(loader):
        if i == 0:
            start = time.perf_counter()  # after the first batch: the workers are up
            continue
        seen += a.shape[0] + b.shape[0]
        if i == batches:
            break
    return seen / (time.perf_counter() - start)


def input_pipeline(args):
    cores = os.cpu_count()
    with tempfile.TemporaryDirectory(prefix="tempered-input-") as root:
        batches = 2 if args.quick else 4
        write_folder(root, classes=4, per_class=(batches + 1) * args.batch // 4 + 1, size=(500, 375), quality=90)
        ours, theirs = {}, {}
        for threads in range(1, cores + 1):
            out = subprocess.run([os.path.join(args.build, "bench", "input_bench"), "--data_dir", root,
                                  "--batch", str(args.batch), "--batches", str(batches), "--threads", str(threads)],
                                 capture_output=True, text=True, check=True).stdout
            ours[threads] = json.loads(out.strip().splitlines()[-1])["views_per_second"]
            print(f"tempered threads {threads}: {ours[threads]:.1f} views/s")
        for workers in range(0, cores + 1):
            theirs[workers] = torchvision_views_per_second(root, 224, args.batch, batches, workers)
            print(f"torchvision workers {workers}: {theirs[workers]:.1f} views/s")
    ours_per_core = max(v / t for t, v in ours.items())
    theirs_per_core = max(v / max(1, w) for w, v in theirs.items())
    ratio = ours_per_core / theirs_per_core
    print(f"per core: tempered {ours_per_core:.1f}, torchvision {theirs_per_core:.1f} views/s")
    print(f"TARGET input_pipeline {ratio:.2f} >=2.0 {'PASS' if ratio >= 2.0 else 'FAIL'}")


def streamed_peak_rss(args, root):
    out_dir = os.path.join(root, "run")
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    cmd = [args.mpirun, "--allow-run-as-root", "--oversubscribe", "-np", "2",
           os.path.join(args.build, "trainer", "tempered-train"), "--threads", "1", "--dataset", "imagefolder",
           "--data_dir", root, "--storage", "stream", "--image_size", "32", "--batch_size", "64", "--max_steps", "20",
           "--curve_train_samples", "0", "--linear_epochs", "0", "--out_dir", out_dir]
    subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    with open(os.path.join(out_dir, "result.json")) as f:
        return json.load(f)["train_peak_rss_mib"]


def input_memory(args):
    peaks = {}
    for images in (10000, 100000):
        with tempfile.TemporaryDirectory(prefix="tempered-memory-") as root:
            write_folder(root, classes=10, per_class=images // 10, size=(64, 48), quality=90, val_per_class=10)
            peaks[images] = streamed_peak_rss(args, root)
            print(f"{images} images: train peak RSS of rank 0 {peaks[images]:.0f} MiB")
    ratio = peaks[100000] / peaks[10000]
    print(f"TARGET input_memory {ratio:.3f} <=1.1 {'PASS' if ratio <= 1.1 else 'FAIL'}")


def input_wait(args):
    steps, log_every = (6, 2) if args.quick else (12, 3)
    with tempfile.TemporaryDirectory(prefix="tempered-wait-") as root:
        write_folder(root, classes=10, per_class=16, size=(500, 375), quality=90, val_per_class=2)
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
        cmd = [args.mpirun, "--allow-run-as-root", "--oversubscribe", "-np", "2",
               os.path.join(args.build, "trainer", "tempered-train"), "--threads", "1", "--dataset", "imagefolder",
               "--data_dir", root, "--storage", "stream", "--image_size", "224", "--model", "resnet50",
               "--batch_size", "16", "--prefetch_steps", "1", "--workers", "1", "--max_steps", str(steps),
               "--log_every_steps", str(log_every), "--curve_train_samples", "0", "--linear_epochs", "0",
               "--test_subset", "16", "--out_dir", os.path.join(root, "run")]
        proc = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stderr.splitlines() if " input wait " in line]
    waits = [int(line.split(" input wait ")[1].split("%")[0]) / 100 for line in lines]
    for line in lines:
        print(line[line.index("step "):])
    worst = max(waits[1:])  # the first window holds the first step's views, made before any step could hide them
    print(f"TARGET input_wait {worst:.2f} <=0.05 {'PASS' if worst <= 0.05 else 'FAIL'}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=["input_pipeline", "input_memory", "input_wait"])
    parser.add_argument("--build", default="build")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--mpirun", default="mpirun")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    {"input_pipeline": input_pipeline, "input_memory": input_memory, "input_wait": input_wait}[args.which](args)


if __name__ == "__main__":
    sys.exit(main())
