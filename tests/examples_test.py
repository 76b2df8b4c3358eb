"""examples/ runs as the documentation says: examples/load_backbone.py RUN_DIR on a tiny finished run loads its
backbone.pth into the small CNN's nn.Sequential and into torchvision's ResNet-18, and its features equal the ones
tempered-train saved (--save_embeddings) to the printed relative difference (at most 1e-5 here); on a run without
saved embeddings it embeds a random batch; on a paused run (no backbone.pth) it says why and exits non-zero.
Run from tests/ with TEMPERED_BIN=<build dir>: /usr/bin/python3 -m unittest -v examples_test
"""
import os
import re
import subprocess
import sys
import unittest

from tempered_testing import SOURCE, TempDir, read_result, run_train

EXAMPLE = os.path.join(SOURCE, "examples", "load_backbone.py")
# A few steps so that the weights and batch norm's running statistics have moved; no linear evaluation or curve.
TINY = ["--train_subset", "128", "--test_subset", "48", "--batch_size", "32", "--max_steps", "2", "--seed", "3",
        "--linear_epochs", "0", "--curve_train_samples", "0", "--eval_every_epochs", "0"]


class LoadBackboneExampleTest(unittest.TestCase):
    def train(self, out_dir, args):
        proc = run_train(1, TINY + ["--out_dir", out_dir] + args)
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        return read_result(out_dir)

    def run_example(self, run_dir):
        # Debian's python3 (the one with torch and torchvision), as the docs say to run it.
        python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
        return subprocess.run([python, EXAMPLE, run_dir], capture_output=True, text=True, timeout=300)

    def assert_matches_tempered(self, out_dir, model_name):
        proc = self.run_example(out_dir)
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        self.assertIn(model_name, proc.stdout)
        found = re.search(r"features \((\d+), (\d+)\); \|python - tempered\| / \|tempered\| = (\S+)", proc.stdout)
        self.assertIsNotNone(found, proc.stdout)
        self.assertEqual(int(found.group(1)), 48)
        self.assertLessEqual(float(found.group(3)), 1e-5, proc.stdout)
        return int(found.group(2))

    def test_small_cnn_features_equal_tempered(self):
        with TempDir() as tmp:
            out = os.path.join(tmp, "small_cnn")
            self.assertEqual(self.train(out, ["--save_embeddings"])["status"], "FINISHED")
            self.assertEqual(self.assert_matches_tempered(out, "Sequential"), 128)

    def test_resnet18_features_equal_tempered(self):
        with TempDir() as tmp:
            out = os.path.join(tmp, "resnet18")
            self.assertEqual(self.train(out, ["--save_embeddings", "--model", "resnet18"])["status"], "FINISHED")
            self.assertEqual(self.assert_matches_tempered(out, "ResNet"), 512)

    def test_without_embeddings_and_paused(self):
        with TempDir() as tmp:
            out = os.path.join(tmp, "plain")
            self.train(out, [])
            proc = self.run_example(out)
            self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
            self.assertIn("features (4, 128) of a random batch", proc.stdout)
            paused = os.path.join(tmp, "paused")
            self.assertEqual(self.train(paused, ["--pause_at_fraction", "0.5"])["status"], "PAUSED")
            proc = self.run_example(paused)
            self.assertNotEqual(proc.returncode, 0)
            self.assertIn("only a FINISHED run writes backbone.pth", proc.stderr)


if __name__ == "__main__":
    unittest.main()
