"""End-to-end: tempered-train on small copies of CIFAR-10, CIFAR-100, SVHN and an ImageNet-style folder that this
test writes in their native formats: each run finishes and reports metrics; a damaged file fails the run with a
message naming it."""
import io
import math
import os
import struct
import unittest

import numpy as np

from tempered_testing import TempDir, read_result, run_train

# A few steps and no linear evaluation: the point is the data path, not the accuracy.
RUN = ["--max_steps", "3", "--linear_epochs", "0", "--batch_size", "64", "--log_every_steps", "1", "--seed", "5"]


def cifar_records(rng, count, label_bytes):
    """count CIFAR binary records: label byte(s) per record, then 3072 random pixels."""
    labels = np.stack([f(np.arange(count)) for f in label_bytes], axis=1).astype(np.uint8)
    pixels = rng.integers(0, 256, (count, 3072), dtype=np.uint8)
    return np.concatenate([labels, pixels], axis=1).tobytes()


def write_cifar10(root, train=256, test=64):
    rng = np.random.default_rng(0)
    for batch, part in enumerate(np.array_split(np.arange(train), 5), 1):
        with open(os.path.join(root, f"data_batch_{batch}.bin"), "wb") as f:
            f.write(cifar_records(rng, len(part), [lambda n: n % 10]))
    with open(os.path.join(root, "test_batch.bin"), "wb") as f:
        f.write(cifar_records(rng, test, [lambda n: n % 10]))


def write_cifar100(root, train=256, test=64):
    rng = np.random.default_rng(1)
    for name, count in (("train.bin", train), ("test.bin", test)):
        with open(os.path.join(root, name), "wb") as f:
            f.write(cifar_records(rng, count, [lambda n: n % 20, lambda n: n % 100]))


def mat5_element(type_code, payload):
    """A MAT v5 data element: (type, byte count) tag, then the payload padded to 8 bytes."""
    return struct.pack("<II", type_code, len(payload)) + payload + b"\0" * (-len(payload) % 8)


def mat5_uint8_array(name, array):
    """An miMATRIX element holding a uint8 (mxUINT8_CLASS = 9) array in MATLAB's column-major order."""
    body = (mat5_element(6, struct.pack("<II", 9, 0))  # miUINT32 array flags: class, no flags
            + mat5_element(5, struct.pack(f"<{array.ndim}i", *array.shape))  # miINT32 dimensions
            + mat5_element(1, name.encode())  # miINT8 name
            + mat5_element(2, array.tobytes(order="F")))  # miUINT8 real part
    return struct.pack("<II", 14, len(body)) + body


def write_svhn(root, train=256, test=64):
    """train_32x32.mat / test_32x32.mat, MAT v5 uncompressed, written by hand: X 32x32x3xN, y Nx1 in 1..10."""
    rng = np.random.default_rng(2)
    header = b"MATLAB 5.0 MAT-file, written by tempered's datasets_e2e_test".ljust(116) + b"\0" * 8
    header += struct.pack("<H", 0x0100) + b"IM"
    for name, count in (("train_32x32.mat", train), ("test_32x32.mat", test)):
        x = rng.integers(0, 256, (32, 32, 3, count), dtype=np.uint8)
        y = (1 + np.arange(count) % 10).astype(np.uint8).reshape(count, 1)
        with open(os.path.join(root, name), "wb") as f:
            f.write(header + mat5_uint8_array("X", x) + mat5_uint8_array("y", y))


def write_imagefolder(root, classes=4, train=32, val=16):
    """root/{train,val}/class_k/*.jpg: JPEGs of varied sizes, each class its own mean colour."""
    from PIL import Image  # Debian's python3-pil
    rng = np.random.default_rng(3)
    for split, count in (("train", train), ("val", val)):
        for k in range(classes):
            folder = os.path.join(root, split, f"class_{k}")
            os.makedirs(folder)
            for i in range(count):
                rows, cols = rng.integers(48, 160, 2)
                pixels = rng.normal(60 * k, 40, (rows, cols, 3)).clip(0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(os.path.join(folder, f"{i:03d}.jpg"), quality=90)


class DatasetsEndToEndTest(unittest.TestCase):

    def train(self, dataset, write, extra=(), config=""):
        with TempDir() as tmp:
            data = os.path.join(tmp, "data")
            os.makedirs(data)
            write(data)
            out = os.path.join(tmp, "out")
            config_path = os.path.join(tmp, "run.pbtxt")
            with open(config_path, "w") as f:
                f.write(config)
            proc = run_train(1, RUN + ["--config", config_path, "--dataset", dataset, "--data_dir", data,
                                       "--out_dir", out, *extra])
            self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
            result = read_result(out)
        self.assertEqual(result["status"], "FINISHED")
        self.assertEqual(result["config"]["data"]["dataset"], dataset)
        self.assertEqual(int(result["global_steps"]), 3)
        losses = [s["loss"] for s in result["step_loss"]]
        self.assertEqual(len(losses), 3)
        self.assertTrue(all(math.isfinite(l) for l in losses), losses)
        final = result["final"]
        self.assertGreaterEqual(final["knn_top1"], 0)
        self.assertLessEqual(final["knn_top1"], 100)
        self.assertTrue(math.isfinite(final["uniformity"]), final)
        self.assertTrue(math.isfinite(final["alignment"]), final)
        return result

    def test_cifar10(self):
        result = self.train("cifar10", write_cifar10)
        self.assertEqual(result["final"]["metric_samples"], 64)  # the whole generated test split

    def test_cifar100(self):
        self.train("cifar100", write_cifar100)

    def test_svhn(self):
        self.train("svhn", write_svhn)

    def test_imagefolder_with_resnet50(self):
        # 128 images decoded to 64x64; ResNet-50 at width 8 (ImageNet stem) keeps the three steps short.
        result = self.train("imagefolder", write_imagefolder, ["--batch_size", "32", "--model", "resnet50"],
                            config="model { width: 8 }")
        self.assertEqual(result["config"]["model"]["arch"], "RESNET50")

    def test_a_damaged_file_fails_the_run_naming_it(self):
        with TempDir() as tmp:
            write_cifar10(tmp)
            path = os.path.join(tmp, "data_batch_4.bin")
            with open(path, "r+b") as f:
                f.truncate(3073 * 10 + 5)
            proc = run_train(1, RUN + ["--dataset", "cifar10", "--data_dir", tmp, "--out_dir",
                                       os.path.join(tmp, "out")])
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn(path, proc.stderr)
        self.assertIn("not a positive multiple of CIFAR-10's 3073-byte records", proc.stderr)


if __name__ == "__main__":
    unittest.main()
