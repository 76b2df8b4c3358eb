"""Temperature beyond a constant (loss.tau_mode), end to end under mpirun: a learnable tau (CLIP's logit scale) and
MACL's adaptive tau give the same run at 1, 2 and 3 ranks (the scale's gradient is all-reduced with the others; the
adaptive tau is the global batch's); a learnable tau resumes exactly from a checkpoint; the cosine schedule's tau
per epoch is Kukleva et al.'s formula; every run records its tau per epoch and in progress.json."""
import json
import math
import os
import unittest

from tempered_testing import TempDir, read_result, run_train

SMALL = ["--train_subset", "640", "--test_subset", "256", "--linear_epochs", "0", "--curve_train_samples", "0",
         "--log_every_steps", "1", "--seed", "7", "--lr", "0.1", "--norm", "none", "--batch_size", "64"]


def losses(result):
    return [s["loss"] for s in result["step_loss"]]


class TauModesTest(unittest.TestCase):
    def train(self, tmp, name, np_, extra):
        out = os.path.join(tmp, name)
        proc = run_train(np_, SMALL + ["--out_dir", out] + extra)
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        return read_result(out), out

    def check_world_sizes(self, extra):
        with TempDir() as tmp:
            runs = {np_: self.train(tmp, f"np{np_}", np_, extra)[0] for np_ in (1, 2, 3)}
        for np_ in (2, 3):
            for step, (a, b) in enumerate(zip(losses(runs[1]), losses(runs[np_])), 1):
                self.assertLessEqual(abs(a - b), 1e-4 * abs(a), f"np={np_} step {step}: {a} vs {b}")
            self.assertAlmostEqual(runs[np_]["epochs"][-1]["tau"], runs[1]["epochs"][-1]["tau"], delta=1e-5)
        return runs[1]

    def test_learnable_tau_is_world_size_invariant_and_moves(self):
        result = self.check_world_sizes(["--tau", "0.1", "--tau_mode", "learnable", "--epochs", "2"])
        taus = [e["tau"] for e in result["epochs"]]
        self.assertEqual(len(taus), 2)
        self.assertNotAlmostEqual(taus[-1], 0.1, places=4, msg="the logit scale was trained")
        self.assertGreaterEqual(min(taus), 0.01 - 1e-6, "clamped at CLIP's logit scale of 100")

    def test_adaptive_tau_is_world_size_invariant(self):
        result = self.check_world_sizes(["--tau", "0.1", "--tau_mode", "adaptive", "--epochs", "1"])
        tau = result["epochs"][-1]["tau"]
        # tau (1 + 0.5 (A - 0)) with A a mean cosine similarity in [-1, 1].
        self.assertTrue(0.05 - 1e-6 <= tau <= 0.15 + 1e-6, tau)
        self.assertNotAlmostEqual(tau, 0.1, places=5)

    def test_cosine_schedule_per_epoch(self):
        with TempDir() as tmp:
            result, out = self.train(tmp, "cosine", 1, ["--tau_mode", "cosine", "--epochs", "4"])
            with open(os.path.join(out, "progress.json")) as f:
                progress = json.load(f)
        taus = [e["tau"] for e in result["epochs"]]
        expected = [0.1 + 0.9 * (1 + math.cos(2 * math.pi * e / 4)) / 2 for e in range(4)]  # 1.0, 0.55, 0.1, 0.55
        for got, want in zip(taus, expected):
            self.assertAlmostEqual(got, want, places=5)
        self.assertAlmostEqual(progress["tau"], expected[-1], places=5)

    def test_learnable_tau_resumes_exactly(self):
        extra = ["--tau", "0.2", "--tau_mode", "learnable", "--epochs", "2", "--checkpoint_every_steps", "3"]
        with TempDir() as tmp:
            whole, _ = self.train(tmp, "whole", 2, extra)
            paused, out = self.train(tmp, "paused", 2, extra + ["--pause_at_fraction", "0.5"])
            self.assertEqual(paused["status"], "PAUSED")
            resumed, _ = self.train(tmp, "paused", 2, extra + ["--resume"])
        self.assertEqual(losses(resumed), losses(whole), "bit for bit")
        self.assertEqual(resumed["epochs"][-1]["tau"], whole["epochs"][-1]["tau"])


if __name__ == "__main__":
    unittest.main()
