"""CIFAR-10 as 60,000 JPEG files (the image-folder layout with a test/ split), read at its own 32 px: two ranks
train on it and every evaluation sample covers all ten classes (the files are stored class by class, so the first
rows would be airplanes only). Needs the shared copy of the data (../shared/data/cifar10-jpeg.tar.xz beside the
repository); skips, saying so, where it is absent, as it will be for a user who has not downloaded CIFAR-10."""
import collections
import os
import subprocess
import unittest

import numpy as np

from tempered_testing import SOURCE, TempDir, read_result, run_train

ARCHIVE = os.environ.get("TEMPERED_CIFAR10_JPEG",
                         os.path.join(SOURCE, "..", "shared", "data", "cifar10-jpeg.tar.xz"))


@unittest.skipUnless(os.path.exists(ARCHIVE), f"CIFAR-10 as JPEG files is not at {ARCHIVE}: skipped")
class Cifar10JpegTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.temp = TempDir()
        cls.root = cls.temp.__enter__()
        subprocess.run(["tar", "-xJf", ARCHIVE, "-C", cls.root], check=True, timeout=600)

    @classmethod
    def tearDownClass(cls):
        cls.temp.__exit__(None, None, None)

    def test_two_ranks_train_and_every_sample_covers_all_classes(self):
        out = os.path.join(self.root, "run")
        proc = run_train(2, ["--dataset", "imagefolder", "--data_dir", self.root, "--image_size", "32",
                             "--eval_crop_fraction", "1", "--model", "small_cnn", "--batch_size", "128",
                             "--max_steps", "4", "--epochs", "1", "--train_subset", "5000", "--test_subset", "1000",
                             "--curve_train_samples", "1000", "--linear_epochs", "0", "--save_embeddings",
                             "--out_dir", out], timeout=600)
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        result = read_result(out)
        self.assertEqual(result["status"], "FINISHED")
        self.assertEqual(result["world_size"], 2)
        final = result["final"]
        self.assertEqual(final["knn_train_samples"], 5000)
        self.assertEqual(final["knn_test_samples"], 1000)
        self.assertEqual(final["inputs"]["metric_samples"], "all 1000")  # metric_samples defaults to 1000
        curve = result["epochs"][0]["metrics"]
        self.assertEqual(curve["inputs"]["knn_samples"], "class-stratified 1000 of 5000 training, all 1000 test images")
        # The subsets: 500 training and 100 test images of each class, not the first rows of the files.
        for split, per_class, total in (("train", 500, 50000), ("test", 100, 10000)):
            labels = np.load(os.path.join(out, "embeddings", f"{split}_labels.npy"))
            indices = np.load(os.path.join(out, "embeddings", f"{split}_indices.npy"))
            self.assertEqual(collections.Counter(labels.tolist()), {c: per_class for c in range(10)}, split)
            self.assertEqual(len(set(indices.tolist())), len(indices))
            self.assertTrue(0 <= indices.min() and indices.max() < total)
            # Stored class by class: file index // (total / 10) is the class.
            np.testing.assert_array_equal(indices // (total // 10), labels)
        self.assertGreater(final["knn_top1"], 10.0 + 5.0, "above chance after 4 steps")

    def test_the_papers_cifar10_setting_runs_on_the_jpeg_files(self):
        """specs/paper_cifar10.pbtxt's base (ResNet-18, memory bank, hard negatives) on the JPEG folder, a few steps
        on a subset: the paper's own setting runs on the paper's own data (its cost: docs/experiments/cifar10.md)."""
        out = os.path.join(self.root, "paper")
        spec = os.path.join(SOURCE, "specs", "paper_cifar10.pbtxt")
        with open(spec) as f:
            text = f.read()
        base = text[text.index("base {"):text.index("\n}\n", text.index("base {")) + 3]
        config = os.path.join(self.root, "paper.pbtxt")
        with open(config, "w") as f:
            f.write(base.replace("base {", "", 1).rsplit("}", 1)[0])
        proc = run_train(2, ["--config", config, "--dataset", "imagefolder", "--data_dir", self.root,
                             "--image_size", "32", "--eval_crop_fraction", "1", "--device", "cpu",
                             "--loss", "hard", "--hard_k", "64", "--tau", "0.7", "--train_subset", "512",
                             "--test_subset", "128", "--batch_size", "64", "--max_steps", "3",
                             "--linear_epochs", "1", "--curve_train_samples", "0", "--out_dir", out], timeout=600)
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        result = read_result(out)
        self.assertEqual(result["status"], "FINISHED")
        self.assertEqual(result["config"]["model"]["arch"], "RESNET18")
        self.assertEqual(result["config"]["loss"]["negatives"], "MEMORY_BANK")
        self.assertEqual(int(result["global_steps"]), 3)


if __name__ == "__main__":
    unittest.main()
