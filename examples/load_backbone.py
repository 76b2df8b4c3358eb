#!/usr/bin/python3
"""Loads a finished run's DIR/backbone.pth into PyTorch: torchvision's ResNet-18/50 (without `fc`) or, for the small
CNN, an nn.Sequential, and computes features with it.

    /usr/bin/python3 examples/load_backbone.py RUN_DIR

backbone.pth is the evaluated encoder without its projection head, a state dict under torchvision's names
(`conv1.weight`, `layer1.0.conv1.weight`, ...) or, for the small CNN, the names of the nn.Sequential below. Only a
FINISHED run writes it. The model is read from RUN_DIR/result.json. Where the run also saved its embeddings
(--save_embeddings) on Fashion-MNIST, the script embeds the same test images again and prints how far its features
are from Tempered's own (DIR/embeddings/test_features.npy); otherwise it embeds a random batch.
Needs Debian's python3-torch and python3-torchvision (use /usr/bin/python3). tests/examples_test.py runs it.
"""
import gzip
import json
import os
import sys

import torch
import torchvision
from torch import nn

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
# (channels, image size) of what Tempered feeds the encoder, per data set.
INPUT_SHAPE = {"fashion_mnist": (1, 28), "cifar10": (3, 32), "cifar100": (3, 32), "svhn": (3, 32),
               "imagefolder": (3, 64)}


def resnet_backbone(path, arch="resnet18", in_channels=1, image_size=28):  # --model resnet18|resnet50, width 64
    m = getattr(torchvision.models, arch)()
    if arch == "resnet18" or image_size < 64:  # the CIFAR stem: a 3x3 stride-1 conv1, no max-pool
        m.conv1, m.maxpool = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False), nn.Identity()
    else:  # ResNet-50 from 64 px on: ImageNet's stem, on in_channels
        m.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    m.fc = nn.Identity()
    m.load_state_dict(torch.load(path, map_location="cpu"))  # strict: every name must match
    return m.eval()


def small_cnn_backbone(path, in_channels=1, width=32):  # --model small_cnn
    layers = []
    for out, stride in [(width, 1), (2 * width, 2), (4 * width, 2), (4 * width, 1)]:
        layers += [nn.Conv2d(in_channels, out, 3, stride, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
        in_channels = out
    m = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    m.load_state_dict(torch.load(path, map_location="cpu"))
    return m.eval()


def preprocess(images):  # uint8 (N, C, H, W) as stored (Fashion-MNIST: N x 1 x 28 x 28), what Tempered feeds
    return (images.float() / 255 - 0.5) * 4


def backbone_of_run(run_dir):
    """The backbone of RUN_DIR, built as its result.json's config says; returns (model, dataset, config)."""
    with open(os.path.join(run_dir, "result.json")) as f:
        result = json.load(f)
    if result.get("status") != "FINISHED":
        sys.exit(f"{run_dir}: status {result.get('status')}; only a FINISHED run writes backbone.pth")
    config = result["config"]
    model = config.get("model", {})
    arch = model.get("arch", "SMALL_CNN").lower()
    if model.get("norm", "BATCH") == "NONE":
        sys.exit(f"{run_dir}: --norm none has no batch norms and biased convs; these loaders assume batch norm")
    dataset = config.get("data", {}).get("dataset") or "fashion_mnist"
    channels, size = INPUT_SHAPE[dataset]
    path = os.path.join(run_dir, "backbone.pth")
    if arch == "small_cnn":
        return small_cnn_backbone(path, channels, model.get("width") or 32), dataset, config
    return resnet_backbone(path, arch, channels, size), dataset, config


def fashion_mnist_test_images(data_dir, rows):
    """Test images by their index in the file: uint8 (len(rows), 1, 28, 28) (IDX: a 16-byte header, then pixels)."""
    with gzip.open(os.path.join(data_dir, "t10k-images-idx3-ubyte.gz")) as f:
        data = f.read(16 + (int(max(rows)) + 1) * 28 * 28)
    images = torch.frombuffer(bytearray(data[16:]), dtype=torch.uint8).reshape(-1, 1, 28, 28)
    return images[torch.as_tensor(rows, dtype=torch.int64)]


def main(argv):
    if len(argv) != 2:
        sys.exit("usage: /usr/bin/python3 examples/load_backbone.py RUN_DIR")
    run_dir = argv[1]
    model, dataset, config = backbone_of_run(run_dir)
    print(f"loaded {os.path.join(run_dir, 'backbone.pth')}: {type(model).__name__} "
          f"({config.get('model', {}).get('arch', 'SMALL_CNN')}), {len(model.state_dict())} tensors")
    saved = os.path.join(run_dir, "embeddings", "test_features.npy")
    if dataset == "fashion_mnist" and os.path.exists(saved):
        import numpy as np
        ours = torch.from_numpy(np.load(saved))
        rows = np.load(os.path.join(run_dir, "embeddings", "test_indices.npy"))
        data_dir = config.get("data", {}).get("data_dir") or FASHION_MNIST
        with torch.no_grad():
            features = model(preprocess(fashion_mnist_test_images(data_dir, rows)))
        difference = ((features - ours).norm() / ours.norm()).item()
        print(f"features {tuple(features.shape)}; |python - tempered| / |tempered| = {difference:.2e} "
              f"against {saved}")
        return 0 if difference <= 1e-4 else 1
    channels, size = INPUT_SHAPE[dataset]
    with torch.no_grad():
        features = model(preprocess(torch.randint(0, 256, (4, channels, size, size), dtype=torch.uint8)))
    print(f"features {tuple(features.shape)} of a random batch (no saved embeddings to compare with)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
