"""tempered-analyze end to end: .npy files made with numpy, the loss and its gradient (the views and the memory-bank
forms, streamed and naive) checked against the PyTorch reference (loss_reference.py), the penalty table and plot,
metrics on closed forms, and bad inputs rejected with one sentence and a non-zero exit."""
import json
import math
import os
import subprocess
import unittest

import numpy as np
import torch

import loss_reference as ref
from tempered_testing import BIN, TempDir

ANALYZE = os.path.join(BIN, "launch", "tempered-analyze")


def analyze(*args):
    return subprocess.run([ANALYZE, *map(str, args)], capture_output=True, text=True, timeout=120)


@unittest.skipUnless(os.path.exists(ANALYZE), f"{ANALYZE} is not built")
class AnalyzeTest(unittest.TestCase):
    def setUp(self):
        self._tmp = TempDir()
        self.dir = self._tmp.__enter__()
        rng = np.random.RandomState(0)
        # Rows of varied norm: the tool normalises them, and the gradient is through that normalisation.
        self.a = (rng.randn(6, 8) * rng.uniform(0.5, 3, (6, 1))).astype(np.float32)
        self.b = (self.a + 0.8 * rng.randn(6, 8)).astype(np.float32)
        self.a_path, self.b_path = self.save("a", self.a), self.save("b", self.b)
        # The memory-bank form at odd sizes: n = 7 anchors against N = 37 bank rows of d = 5. Positive rows are
        # noisy copies of their anchors; anchors 1 and 5 share positive row 30 (a bank row may serve several).
        self.positives = np.array([3, 30, 0, 36, 11, 30, 17], dtype=np.int64)
        self.anchors = (rng.randn(7, 5) * rng.uniform(0.5, 3, (7, 1))).astype(np.float32)
        self.bank = (rng.randn(37, 5) * rng.uniform(0.5, 3, (37, 1))).astype(np.float32)
        self.bank[self.positives] = self.anchors + 0.5 * rng.randn(7, 5)
        self.anchors_path, self.bank_path = self.save("anchors", self.anchors), self.save("bank", self.bank)
        self.positives_path = self.save("positives", self.positives)

    def tearDown(self):
        self._tmp.__exit__(None, None, None)

    def save(self, name, array):
        path = os.path.join(self.dir, name + ".npy")
        np.save(path, array)
        return path

    def ok(self, *args):
        run = analyze(*args)
        self.assertEqual(run.returncode, 0, run.stderr)
        return run.stdout

    def test_loss_and_gradient_match_reference(self):
        grad_path = os.path.join(self.dir, "grad.npy")
        for loss in ref.LOSSES:
            for tau in (0.01, 0.07, 1.0):
                with self.subTest(loss=loss, tau=tau):
                    out = json.loads(self.ok("loss", "--views", self.a_path, self.b_path, "--loss", loss, "--tau", tau,
                                             "--hard_k", 3, "--grad_out", grad_path))
                    expected, expected_grad = ref.symmetric_views_loss(self.a, self.b, loss, tau, hard_k=3)
                    self.assertAlmostEqual(out["loss"], expected, delta=1e-5 * max(1.0, abs(expected)))
                    self.assertEqual(out["anchors"], 12)
                    grad = np.load(grad_path)
                    self.assertEqual((grad.dtype, grad.shape), (np.float32, (12, 8)))
                    np.testing.assert_allclose(grad, expected_grad, rtol=1e-4, atol=1e-6 * np.abs(expected_grad).max())

    def test_views_streaming_and_naive_forms_agree_with_reference(self):
        # --tile_scores 7 streams tiles of 7 / 12 -> 1 candidate; 0 is the naive (12, 12) matrix.
        grad_path = os.path.join(self.dir, "grad.npy")
        for tile in (0, 7):
            for loss in ref.LOSSES:
                with self.subTest(loss=loss, tile_scores=tile):
                    out = json.loads(self.ok("loss", "--views", self.a_path, self.b_path, "--loss", loss, "--tau", 0.07,
                                             "--hard_k", 3, "--tile_scores", tile, "--grad_out", grad_path))
                    expected, expected_grad = ref.symmetric_views_loss(self.a, self.b, loss, 0.07, hard_k=3)
                    self.assertAlmostEqual(out["loss"], expected, delta=1e-5 * max(1.0, abs(expected)))
                    np.testing.assert_allclose(np.load(grad_path), expected_grad, rtol=1e-4,
                                               atol=1e-6 * np.abs(expected_grad).max())

    def bank_loss(self, loss, tau, *flags):
        grad_path = os.path.join(self.dir, "bank_grad.npy")
        out = json.loads(self.ok("loss", "--anchors", self.anchors_path, "--bank", self.bank_path, "--positives",
                                 self.positives_path, "--loss", loss, "--tau", tau, "--grad_out", grad_path, *flags))
        grad = np.load(grad_path)
        self.assertEqual((grad.dtype, grad.shape), (np.float32, (7, 5)))
        return out, grad

    def test_bank_loss_and_gradient_match_reference(self):
        # tile_scores: None = the default (the trainer's, one tile here), 0 = the naive (7, 37) matrix, 40 = tiles of
        # 40 / 7 -> 5 bank rows, the last of 2.
        for tile in (None, 0, 40):
            flags = [] if tile is None else ["--tile_scores", tile]
            for loss in ref.LOSSES:
                for tau in (0.01, 0.2):
                    with self.subTest(loss=loss, tau=tau, tile_scores=tile):
                        out, grad = self.bank_loss(loss, tau, "--hard_k", 4, *flags)
                        expected, expected_grad, k = ref.bank_loss(self.anchors, self.bank, self.positives, loss,
                                                                   tau, hard_k=4)
                        self.assertAlmostEqual(out["loss"], expected, delta=1e-6 * max(1.0, abs(expected)))
                        self.assertEqual((out["anchors"], out["bank"], out["negatives_per_anchor"]), (7, 37, 36))
                        self.assertEqual(out.get("hard_k", 0), k if loss.startswith("hard") else 0)
                        np.testing.assert_allclose(grad, expected_grad, rtol=1e-4,
                                                   atol=1e-6 * np.abs(expected_grad).max())

    def test_bank_default_k_and_penalty_entropy(self):
        # 36 negatives: K = round(2.88) = 3. H(r_i) over the 36 negatives of each anchor, as in §3.
        for tile in (0, 40):
            with self.subTest(tile_scores=tile):
                out, grad = self.bank_loss("hard", 0.2, "--tile_scores", tile)
                expected, expected_grad, k = ref.bank_loss(self.anchors, self.bank, self.positives, "hard", 0.2)
                self.assertEqual((out["hard_k"], k), (3, 3))
                self.assertAlmostEqual(out["loss"], expected, places=6)
                np.testing.assert_allclose(grad, expected_grad, rtol=1e-4, atol=1e-6 * np.abs(expected_grad).max())
                z, m = (ref.unit(torch.as_tensor(x, dtype=torch.float64)) for x in (self.anchors, self.bank))
                _, entropy = ref.relative_penalty(z @ m.T, list(self.positives), [-1] * 7, 0.2)
                self.assertAlmostEqual(out["penalty_entropy"], entropy.mean().item(), places=5)

    def test_default_k_is_eight_percent_of_negatives(self):
        # 2N - 2 = 10 negatives: round(0.8) = 1.
        out = json.loads(self.ok("loss", f"--views={self.a_path},{self.b_path}", "--loss", "hard", "--tau", 0.2))
        self.assertEqual(out["hard_k"], 1)
        self.assertAlmostEqual(out["loss"], ref.symmetric_views_loss(self.a, self.b, "hard", 0.2, hard_k=1)[0],
                               places=6)

    def test_penalty_table_and_plot(self):
        taus = [0.05, 0.1, 0.2, 0.5, 1.0]
        out_dir = os.path.join(self.dir, "fig3")
        stdout = self.ok("penalty", "--tau", ",".join(map(str, taus)), "--points", 101, "--out_dir", out_dir)
        rows = [line.split() for line in stdout.splitlines() if line and line[0].isdigit()]
        self.assertEqual([float(row[0]) for row in rows], taus)
        entropy = [float(row[1]) for row in rows]
        self.assertEqual(entropy, sorted(entropy))  # H(r) increases with tau (docs/paper.md §3)
        self.assertLess(entropy[-1], math.log(101))
        # r at s = 1 against the closed form exp(1/tau) / sum_k exp(s_k/tau).
        s = np.linspace(-1, 1, 101)
        for row, tau in zip(rows, taus):
            self.assertAlmostEqual(float(row[3]), 1 / np.exp((s - 1) / tau).sum(), delta=1e-4 * float(row[3]))
        with open(os.path.join(out_dir, "penalty.png"), "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
        table = np.loadtxt(os.path.join(out_dir, "penalty.tsv"))
        self.assertEqual(table.shape, (101, 1 + len(taus)))
        np.testing.assert_allclose(table[:, 1:].sum(0), 1, rtol=1e-9)  # 12 significant digits in the file

    def test_metrics_closed_forms(self):
        # Four orthogonal directions (rows scaled: the tool normalises): every distinct pair has ||x - y||^2 = 2,
        # so -L_uniformity = -log exp(-4) = 4; same-label pairs are orthogonal: tolerance 0.
        e = self.save("e", 3 * np.eye(4, dtype=np.float32))
        y = self.save("y", np.array([0, 0, 1, 1]))
        out = json.loads(self.ok("metrics", "--embeddings", e, "--labels", y, "--views", e, e))
        self.assertAlmostEqual(out["uniformity"], 4.0, places=6)
        self.assertAlmostEqual(out["tolerance"], 0.0, places=6)
        self.assertAlmostEqual(out["alignment"], 0.0, places=6)
        self.assertAlmostEqual(out["positive_similarity"], 1.0, places=6)
        self.assertEqual(out["top_negative_similarity"], [0.0, 0.0, 0.0])
        # Random data against the definitions written with numpy.
        rng = np.random.RandomState(1)
        x = rng.randn(30, 5)
        labels = rng.randint(0, 3, 30)
        out = json.loads(self.ok("metrics", "--embeddings", self.save("x", x), "--labels", self.save("l", labels),
                                 "--views", self.a_path, self.b_path))
        u = x / np.linalg.norm(x, axis=1, keepdims=True)
        sq = ((u[:, None] - u[None]) ** 2).sum(-1)
        distinct = ~np.eye(30, dtype=bool)
        same = (labels[:, None] == labels[None]) & distinct
        self.assertAlmostEqual(out["uniformity"], -math.log(np.exp(-2 * sq[distinct]).mean()), places=6)
        self.assertAlmostEqual(out["tolerance"], (u @ u.T)[same].mean(), places=6)
        na = self.a / np.linalg.norm(self.a, axis=1, keepdims=True)
        nb = self.b / np.linalg.norm(self.b, axis=1, keepdims=True)
        self.assertAlmostEqual(out["alignment"], ((na - nb) ** 2).sum(1).mean(), places=5)
        s = na.astype(np.float64) @ nb.T
        self.assertAlmostEqual(out["positive_similarity"], np.diag(s).mean(), places=5)
        top = -np.sort(-np.where(np.eye(6, dtype=bool), -np.inf, s), axis=1)[:, :5].mean(0)
        np.testing.assert_allclose(out["top_negative_similarity"], top, atol=1e-5)

    def test_bad_inputs_fail_with_one_sentence(self):
        d = self.dir
        text = os.path.join(d, "text.npy")
        with open(text, "w") as f:
            f.write("1 2 3\n")
        truncated = self.save("truncated", self.a)
        with open(truncated, "r+b") as f:
            f.truncate(os.path.getsize(truncated) - 4)
        nan = self.a.copy()
        nan[2, 3] = np.nan
        zero = self.a.copy()
        zero[4] = 0
        views = ["loss", "--loss", "infonce", "--tau", 0.1, "--views"]
        bank = ["loss", "--loss", "infonce", "--tau", 0.1, "--anchors", self.anchors_path]
        big, negative = self.positives.copy(), self.positives.copy()
        big[2], negative[6] = 37, -1
        cases = {
            "missing file": (views + [os.path.join(d, "nope.npy"), self.b_path], "nope.npy"),
            "not npy": (views + [text, self.b_path], "not a .npy file"),
            "integer views": (views + [self.save("int", self.a.astype(np.int64)), self.b_path], "holds integers"),
            "uint8": (views + [self.save("u8", self.a.astype(np.uint8)), self.b_path], "'|u1'"),
            "big-endian": (views + [self.save("be", self.a.astype(">f4")), self.b_path], "'>f4'"),
            "fortran order": (views + [self.save("f", np.asfortranarray(self.a)), self.b_path], "Fortran"),
            "rank 1": (views + [self.save("r1", self.a[0]), self.b_path], "expected a 2-D array"),
            "shape mismatch": (views + [self.a_path, self.save("b5", self.b[:5])], "(5, 8)"),
            "one row": (views + [self.save("a1", self.a[:1]), self.save("b1", self.b[:1])], "at least 2"),
            "truncated": (views + [truncated, self.b_path], "truncated"),
            "nan": (views + [self.save("nan", nan), self.b_path], "NaN"),
            "zero row": (views + [self.save("zero", zero), self.b_path], "Row 4"),
            "one view": (["loss", "--tau", 0.1, "--views", self.a_path], "--views needs two"),
            "unknown loss": (["loss", "--loss", "triplet", "--tau", 0.1, "--views", self.a_path, self.b_path],
                             "unknown loss 'triplet'"),
            "negative tau": (["loss", "--tau=-1", "--views", self.a_path, self.b_path], "'-1' is not a positive"),
            "tau list for loss": (["loss", "--tau", "0.1,0.2", "--views", self.a_path, self.b_path], "one temperature"),
            "no tau": (["penalty"], "--tau is required"),
            "bank d": (bank + ["--bank", self.save("bank6", np.ones((37, 6))), "--positives", self.positives_path],
                       "has rows of d = 6 but --anchors"),
            "positives length": (bank + ["--bank", self.bank_path, "--positives", self.save("i6", self.positives[:6])],
                                 "expected (7,), one bank row per anchor"),
            "positives rank 2": (bank + ["--bank", self.bank_path, "--positives",
                                         self.save("i71", self.positives[:, None])], "has shape (7, 1)"),
            "positive too large": (bank + ["--bank", self.bank_path, "--positives", self.save("i37", big)],
                                   "entry 2 of %s is 37, outside the rows [0, 37)" % os.path.join(d, "i37.npy")),
            "negative positive": (bank + ["--bank", self.bank_path, "--positives", self.save("ineg", negative)],
                                  "entry 6 of %s is -1" % os.path.join(d, "ineg.npy")),
            "int32 positives": (bank + ["--bank", self.bank_path, "--positives",
                                        self.save("i32", self.positives.astype(np.int32))],
                                "holds int32; expected int64"),
            "float positives": (bank + ["--bank", self.bank_path, "--positives",
                                        self.save("if", self.positives.astype(np.float64))], "holds floats"),
            "views and bank": (bank + ["--bank", self.bank_path, "--positives", self.positives_path, "--views",
                                       self.a_path, self.b_path], "two forms of `loss`"),
            "bank without positives": (bank + ["--bank", self.bank_path], "needs all three"),
            "hard_k above negatives": (bank + ["--bank", self.bank_path, "--positives", self.positives_path, "--loss",
                                               "hard_simple", "--hard_k", 37], "--hard_k 37 is more than the 36"),
            "views hard_k above negatives": (views + [self.a_path, self.b_path, "--loss", "hard", "--hard_k", 11],
                                             "--hard_k 11 is more than the 10 negatives"),
            "bank tau zero": (["loss", "--tau", 0, "--anchors", self.anchors_path, "--bank", self.bank_path,
                               "--positives", self.positives_path], "'0' is not a positive"),
            "bank negative tau": (["loss", "--tau=-0.1", "--anchors", self.anchors_path, "--bank", self.bank_path,
                                   "--positives", self.positives_path], "'-0.1' is not a positive"),
            "one-row bank": (bank + ["--bank", self.save("bank1", self.bank[:1]), "--positives",
                                     self.save("zeros", np.zeros(7, dtype=np.int64))], "expected at least 2"),
            "negative tile_scores": (views + [self.a_path, self.b_path, "--tile_scores", -1], "--tile_scores must be"),
            "bad tau": (["penalty", "--tau", "0.1,abc"], "'abc'"),
            "labels length": (["metrics", "--embeddings", self.a_path, "--labels", self.save("y3", np.arange(3))],
                              "expected (6,)"),
            "float labels": (["metrics", "--embeddings", self.a_path, "--labels", self.save("yf", np.zeros(6))],
                             "holds floats"),
            "no subcommand": ([], "expected one subcommand"),
            "unknown subcommand": (["plot"], "got 'plot'"),
        }
        for name, (args, expected) in cases.items():
            with self.subTest(name):
                run = analyze(*args)
                self.assertNotEqual(run.returncode, 0)
                self.assertNotIn(run.returncode, (-6, 134, -11, 139), "a crash, not a clean error")
                lines = run.stderr.strip().splitlines()
                self.assertEqual(len(lines), 1, run.stderr)
                self.assertTrue(lines[0].startswith("tempered-analyze: error: "), lines[0])
                self.assertIn(expected, lines[0])
                self.assertEqual(run.stdout, "")


if __name__ == "__main__":
    unittest.main()
