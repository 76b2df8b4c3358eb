#!/usr/bin/python3
"""SimCLR with torchvision's ResNet-18 the way a PyTorch user writes it: the baseline of the GPU check's
resnet18_vs_pytorch comparison (bench/gpu_check.sh, issue 32 Part B; bench/README.md "GPU check").

The same work per step as `tempered-train --model resnet18 --norm batch --batch_size 512 --image_size 32` on
Fashion-MNIST (the data the GPU machine has):
  - data: Fashion-MNIST's 60,000 training images (28x28 grayscale), read from the IDX .gz files;
  - two views of each image by torchvision's transforms on PIL images in DataLoader worker processes (pinned memory,
    persistent workers, 4 batches prefetched per worker): RandomResizedCrop(32, scale 0.2-1, antialiased),
    ColorJitter(0.4, 0.4) (brightness and contrast: the images are grayscale), RandomHorizontalFlip, ToTensor;
  - model: torchvision.models.resnet18 with the CIFAR stem (3x3 stride-1 first conv for one channel, no max-pool)
    and a Linear(512, 128) head, L2-normalised; channels_last;
  - loss: InfoNCE over the 2B views at tau 0.2 (each view's positive its other view), the mean over 2B anchors, in
    fp32 (with --bf16 the encoder runs under torch.autocast(bfloat16), as tempered-train's --bf16);
  - SGD (lr 0.06, momentum 0.9, weight decay 5e-4).

It gets its best known settings: cudnn.benchmark, channels_last, --workers DataLoader processes (default: the
machine's cores), non_blocking uploads of pinned batches, set_to_none gradients, and no synchronisation inside the
timed steps but the loss read at the end of the window.

Prints one JSON line: {"images_per_second": ..., "steps": ..., "seconds": ..., ...}; images/s counts the global
batch's images over the timed steps after --warmup steps.
"""
import argparse
import gzip
import json
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torchvision import transforms


def read_idx_images(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    count, rows, cols = (int.from_bytes(data[i:i + 4], "big") for i in (4, 8, 12))
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(count, rows, cols)


class TwoViews(torch.utils.data.Dataset):
    def __init__(self, images, size):
        self.images = images
        self.transform = transforms.Compose([
            transforms.RandomResizedCrop(size, scale=(0.2, 1.0), antialias=True),
            transforms.ColorJitter(brightness=0.4, contrast=0.4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
        ])

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        image = Image.fromarray(self.images[i], mode="L")
        return self.transform(image), self.transform(image)


def make_encoder(embed_dim):
    model = torchvision.models.resnet18(num_classes=embed_dim)
    model.conv1 = torch.nn.Conv2d(1, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = torch.nn.Identity()
    return model


def info_nce(z, tau):
    n = z.shape[0] // 2
    logits = z @ z.t() / tau
    logits.fill_diagonal_(float("-inf"))
    positive = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, positive)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch_size", type=int, default=512)
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=60, help="timed steps")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--subset", type=int, default=0, help="first N images only (0 = all; the CPU dry run)")
    args = parser.parse_args()

    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    images = read_idx_images(os.path.join(args.data_dir, "train-images-idx3-ubyte.gz"))
    if args.subset:
        images = images[:args.subset]
    loader = torch.utils.data.DataLoader(
        TwoViews(images, args.image_size), batch_size=args.batch_size, shuffle=True, drop_last=True,
        num_workers=args.workers, pin_memory=device.type == "cuda", persistent_workers=args.workers > 0,
        prefetch_factor=4 if args.workers > 0 else None)
    encoder = make_encoder(128).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(encoder.parameters(), lr=0.06, momentum=0.9, weight_decay=5e-4)

    def step(v0, v1):
        x = torch.cat([v0, v1]).to(device, non_blocking=True).to(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            z = encoder(x)
        loss = info_nce(F.normalize(z.float(), dim=1), 0.2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    done, start, loss = 0, None, None
    while done < args.warmup + args.steps:
        for v0, v1 in loader:
            if done == args.warmup:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
            loss = step(v0, v1)
            done += 1
            if done == args.warmup + args.steps:
                break
    final_loss = loss.item()  # the one host read: it waits for the device, so the window ends here
    seconds = time.perf_counter() - start
    print(json.dumps({"images_per_second": args.steps * args.batch_size / seconds, "steps": args.steps,
                      "seconds": seconds, "batch_size": args.batch_size, "workers": args.workers,
                      "bf16": args.bf16, "device": str(device), "final_loss": final_loss,
                      "torch": torch.__version__, "torchvision": torchvision.__version__}))


if __name__ == "__main__":
    main()
