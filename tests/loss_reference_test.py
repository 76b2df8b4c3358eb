"""The PyTorch reference of the losses checks itself against the paper's formulas, then the C++ losses are compared
with it: loss_reference.py writes golden files into a temporary directory and loss_golden_test (C++) reads them.

Run by ctest with TEMPERED_BIN set (the build directory); by hand: TEMPERED_BIN=build /usr/bin/python3 -m unittest
loss_reference_test (from tests/).
"""
import math
import os
import subprocess
import tempfile
import unittest

import torch

import loss_reference as ref


def random_case(n=4, c=9, dim=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    anchors = ref.unit(torch.randn(n, dim, generator=g, dtype=torch.float64))
    candidates = ref.unit(torch.randn(c, dim, generator=g, dtype=torch.float64))
    positive = [0, 3, 5, 8][:n]
    exclude = [-1, 4, -1, 2][:n]
    return anchors, candidates, positive, exclude


class ReferenceSelfCheck(unittest.TestCase):
    """The reference against Eq 1 written out with raw exponentials (safe at tau = 0.5) and the §3 identities."""

    def test_infonce_is_eq1(self):
        a, c, pos, excl = random_case()
        s = (a @ c.T).tolist()
        tau = 0.5
        got = ref.losses(a, c, pos, excl, "infonce", tau, 0)
        for i in range(len(pos)):
            negs = ref.negatives_of(i, len(s[0]), pos, excl)
            num = math.exp(s[i][pos[i]] / tau)
            expected = -math.log(num / (num + sum(math.exp(s[i][k] / tau) for k in negs)))
            self.assertAlmostEqual(got[i].item(), expected, places=12)

    def test_hard_with_every_negative_is_infonce(self):
        a, c, pos, excl = random_case()
        for tau in ref.TAUS:
            info = ref.losses(a, c, pos, excl, "infonce", tau, 0)
            for k in (8, 100):  # anchors have 7 or 8 negatives
                torch.testing.assert_close(ref.losses(a, c, pos, excl, "hard", tau, k), info, rtol=1e-12, atol=1e-12)

    def test_gradient_is_boltzmann(self):
        a, c, pos, excl = random_case()
        tau = 0.2
        s = (a @ c.T).requires_grad_(True)
        torch.stack([ref.anchor_loss(s, i, pos, excl, "infonce", tau, 0) for i in range(len(pos))]).sum().backward()
        r, _ = ref.relative_penalty(s.detach(), pos, excl, tau)
        for i in range(len(pos)):
            negs = ref.negatives_of(i, s.shape[1], pos, excl)
            g_pos = s.grad[i, pos[i]]
            self.assertAlmostEqual(s.grad[i, negs].abs().sum().item(), -g_pos.item(), places=12)
            torch.testing.assert_close(s.grad[i, negs] / -g_pos, r[i, negs])

    def test_limits(self):
        a, c, pos, excl = random_case(n=2)  # memory-bank form: N = 9 candidates
        nearest = ref.losses(a, c, pos, [-1, -1], "nearest", 1.0, 0)
        low = 1e-4 * ref.losses(a, c, pos, [-1, -1], "infonce", 1e-4, 0)
        torch.testing.assert_close(low, nearest, rtol=0, atol=1e-4 * math.log(9))
        s = a @ c.T
        n = 9
        limit = torch.stack([-(n - 1) / n * s[i, pos[i]] + (s[i].sum() - s[i, pos[i]]) / n for i in range(2)])
        high = 1e4 * (ref.losses(a, c, pos, [-1, -1], "infonce", 1e4, 0) - math.log(n))
        torch.testing.assert_close(high, limit, rtol=0, atol=1e-4)

    def test_bank_form(self):
        """bank_loss (tempered-analyze's memory-bank form) against Eq 1 written out on the normalised rows, and its
        gradient with respect to the raw anchors against central finite differences, for every loss."""
        g = torch.Generator().manual_seed(2)
        anchors = torch.randn(3, 4, generator=g, dtype=torch.float64) * 2
        bank = torch.randn(7, 4, generator=g, dtype=torch.float64)
        positives = [4, 0, 4]
        tau = 0.5
        value, grad, k = ref.bank_loss(anchors, bank, positives, "infonce", tau)
        self.assertEqual(k, 1)  # round(0.08 * 6) = 0, at least 1
        s = (ref.unit(anchors) @ ref.unit(bank).T).tolist()
        expected = sum(-math.log(math.exp(s[i][p] / tau) / sum(math.exp(v / tau) for v in s[i]))
                       for i, p in enumerate(positives)) / 3
        self.assertAlmostEqual(value, expected, places=12)
        for loss in ref.LOSSES:
            _, grad, _ = ref.bank_loss(anchors, bank, positives, loss, tau, hard_k=2)
            numeric = torch.zeros_like(anchors)
            eps = 1e-6
            for i in range(3):
                for j in range(4):
                    step = torch.zeros_like(anchors)
                    step[i, j] = eps
                    plus = ref.bank_loss(anchors + step, bank, positives, loss, tau, hard_k=2)[0]
                    minus = ref.bank_loss(anchors - step, bank, positives, loss, tau, hard_k=2)[0]
                    numeric[i, j] = (plus - minus) / (2 * eps)
            torch.testing.assert_close(torch.as_tensor(grad), numeric, rtol=1e-6, atol=1e-8, msg=loss)


class GoldenTest(unittest.TestCase):
    def test_cpp_losses_match_reference(self):
        binary = os.path.join(os.environ.get("TEMPERED_BIN", ""), "tests", "loss_golden_test")
        if not os.path.exists(binary):
            self.skipTest(f"{binary} is not built (set TEMPERED_BIN to the build directory)")
        with tempfile.TemporaryDirectory() as golden:
            entries = ref.write_golden(golden)
            self.assertGreater(len(entries), 100)
            run = subprocess.run([binary], env=dict(os.environ, TEMPERED_GOLDEN_DIR=golden),
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
            self.assertEqual(run.returncode, 0, run.stdout[-20000:])
            self.assertIn("[  PASSED  ] 1 test", run.stdout)
            self.assertNotIn("SKIPPED", run.stdout)


if __name__ == "__main__":
    unittest.main()
