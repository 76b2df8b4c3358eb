"""DIR/backbone.pth in Python: the README's loaders (its code block, run as written there) put it into torchvision's
ResNet-18 and ResNet-50 and into the small CNN's nn.Sequential, and on the same test images these give the features
tempered-train computed itself (--save_embeddings: DIR/embeddings/test_features.npy) to 1e-5. Only a finished run
writes the file: a paused one has none until it is resumed to the end.
Run from tests/ with TEMPERED_BIN=<build dir>: /usr/bin/python3 -m unittest -v backbone_interop_test
"""
import gzip
import os
import runpy
import unittest

import numpy as np
import torch

try:
    import torchvision  # noqa: F401 (the README's code imports it; fail here, with the package to install)
except ImportError as e:
    raise ImportError("backbone_interop_test needs Debian's python3-torchvision (docker/install-deps.sh)") from e

from tempered_testing import FASHION_MNIST, SOURCE, TempDir, read_result, run_train

# A few steps, so that the weights and batch norm's running statistics have moved from their initial values; no
# linear evaluation and no per-epoch curve (not what is tested, and seconds each for a ResNet on one thread).
TINY = ["--train_subset", "128", "--test_subset", "64", "--batch_size", "32", "--max_steps", "2", "--seed", "5",
        "--linear_epochs", "0", "--curve_train_samples", "0", "--eval_every_epochs", "0", "--save_embeddings"]


def readme_loaders():
    """The loaders of examples/load_backbone.py (the documented way to load backbone.pth), by name."""
    return runpy.run_path(os.path.join(SOURCE, "examples", "load_backbone.py"))


def fashion_mnist_test_images(rows):
    """The test images at file positions `rows`, as stored: uint8 (len(rows), 1, 28, 28) (IDX: a 16-byte header,
    then the pixels)."""
    n = int(max(rows)) + 1
    with gzip.open(os.path.join(FASHION_MNIST, "t10k-images-idx3-ubyte.gz")) as f:
        data = f.read(16 + n * 28 * 28)
    images = torch.frombuffer(bytearray(data[16:]), dtype=torch.uint8).reshape(n, 1, 28, 28)
    return images[torch.as_tensor(rows, dtype=torch.long)]


class BackboneInteropTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.readme = readme_loaders()

    def train(self, np_, out_dir, args):
        proc = run_train(np_, TINY + ["--out_dir", out_dir] + args)
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        return read_result(out_dir)

    def assert_same_features(self, out_dir, model):
        ours = torch.from_numpy(np.load(os.path.join(out_dir, "embeddings", "test_features.npy")))
        with torch.no_grad():
            # The rows Tempered embedded: data.test_subset is a class-stratified sample, its file positions saved.
            rows = np.load(os.path.join(out_dir, "embeddings", "test_indices.npy"))
            theirs = model(self.readme["preprocess"](fashion_mnist_test_images(rows)))
        self.assertEqual(tuple(theirs.shape), tuple(ours.shape))
        self.assertGreater(ours.std().item(), 0, "constant features would compare equal for the wrong reason")
        relative = ((theirs - ours).norm() / ours.norm()).item()
        worst = ((theirs - ours).abs().max() / ours.abs().max()).item()
        self.assertLessEqual(relative, 1e-5, f"|python - tempered| / |tempered| = {relative}")
        self.assertLessEqual(worst, 1e-5, f"max |python - tempered| / max |tempered| = {worst}")

    def assert_trained_statistics(self, state, key):
        """The file holds the evaluated running statistics, not batch norm's initial zeros."""
        self.assertIsInstance(state, dict)
        self.assertTrue(all(isinstance(v, torch.Tensor) for v in state.values()))
        self.assertGreater(state[key].abs().max().item(), 0, key)

    def test_small_cnn_paused_has_none_then_resumed_to_the_end(self):
        # Two ranks: each keeps its own running statistics while training; the file and the features (each rank
        # embeds its block of the test set) must both be rank 0's.
        with TempDir() as tmp:
            out = os.path.join(tmp, "small_cnn")
            paused = self.train(2, out, ["--pause_at_fraction", "0.5"])
            self.assertEqual(paused["status"], "PAUSED")
            self.assertTrue(os.path.exists(os.path.join(out, "checkpoint.pt")))
            for name in ["backbone.pth", "model.pt", "embeddings"]:
                self.assertFalse(os.path.exists(os.path.join(out, name)), f"a paused run wrote {name}")
            finished = self.train(2, out, ["--resume"])  # without the pause: it would pause again at once
            self.assertEqual(finished["status"], "FINISHED")
            path = os.path.join(out, "backbone.pth")
            state = torch.load(path)
            self.assertEqual(list(state)[:3], ["0.weight", "1.weight", "1.bias"])
            self.assert_trained_statistics(state, "1.running_mean")
            self.assert_same_features(out, self.readme["small_cnn_backbone"](path))

    def test_resnet18(self):
        with TempDir() as tmp:
            out = os.path.join(tmp, "resnet18")
            self.assertEqual(self.train(1, out, ["--model", "resnet18"])["status"], "FINISHED")
            path = os.path.join(out, "backbone.pth")
            self.assert_trained_statistics(torch.load(path), "layer4.1.bn2.running_mean")
            self.assert_same_features(out, self.readme["resnet_backbone"](path))  # load_state_dict is strict

    def test_resnet50(self):
        with TempDir() as tmp:
            out = os.path.join(tmp, "resnet50")
            self.assertEqual(self.train(1, out, ["--model", "resnet50"])["status"], "FINISHED")
            path = os.path.join(out, "backbone.pth")
            self.assert_trained_statistics(torch.load(path), "layer4.2.bn3.running_mean")
            self.assert_same_features(out, self.readme["resnet_backbone"](path, arch="resnet50"))


if __name__ == "__main__":
    unittest.main()
