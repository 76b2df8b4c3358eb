"""End-to-end tests of tempered-train under mpirun: world-size invariance and clear errors on bad input."""
import gzip
import json
import math
import os
import shutil
import subprocess
import unittest

from tempered_testing import FASHION_MNIST, TempDir, read_result, run_train

# A few steps on a small subset: the invariance holds step by step, so a short run shows it.
SMALL = ["--train_subset", "640", "--test_subset", "256", "--linear_epochs", "0", "--max_steps", "5",
         "--log_every_steps", "1", "--seed", "7", "--lr", "0.1"]


def load_params(out_dir):
    import torch  # Debian's python3-torch: reads the TorchScript archive the trainer saves
    module = torch.jit.load(os.path.join(out_dir, "model.pt"))
    return {k: v.double() for k, v in module.named_parameters()}


class WorldSizeInvarianceTest(unittest.TestCase):
    """The global batch defines the computation: 1x64, 2x32, 3x(22,21,21), 4x16 give the same run."""

    def check_invariance(self, extra, world_sizes=(1, 2, 3, 4), whole_vector=False):
        """whole_vector: compare ||theta_a - theta_b|| / ||theta_a|| over all parameters at once instead of per
        tensor (see test_sync_batch_norm)."""
        with TempDir() as tmp:
            runs = {}
            for np_ in world_sizes:
                out = os.path.join(tmp, f"np{np_}")
                proc = run_train(np_, SMALL + ["--batch_size", "64", "--out_dir", out] + extra)
                self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
                runs[np_] = (read_result(out), load_params(out))
            ref_result, ref_params = runs[world_sizes[0]]
            ref_losses = [s["loss"] for s in ref_result["step_loss"]]
            self.assertEqual(len(ref_losses), 5)
            for np_ in world_sizes[1:]:
                result, params = runs[np_]
                self.assertEqual(result["world_size"], np_)
                losses = [s["loss"] for s in result["step_loss"]]
                for step, (a, b) in enumerate(zip(ref_losses, losses), 1):
                    self.assertLessEqual(abs(a - b), 1e-4 * abs(a), f"np={np_} step {step}: {a} vs {b}")
                self.assertEqual(params.keys(), ref_params.keys())
                if whole_vector:
                    diff = sum((p - ref_params[n]).norm().item() ** 2 for n, p in params.items()) ** 0.5
                    norm = sum(p.norm().item() ** 2 for p in ref_params.values()) ** 0.5
                    self.assertLessEqual(diff / norm, 1e-4, f"np={np_}: relative parameter difference {diff / norm}")
                for name, p in params.items() if not whole_vector else ():
                    rel = (p - ref_params[name]).norm().item() / max(ref_params[name].norm().item(), 1e-12)
                    self.assertLessEqual(rel, 1e-4, f"np={np_} parameter {name}: relative difference {rel}")
            # The parameters moved: the comparison above is not between untouched initialisations.
            self.assertTrue(all(math.isfinite(l) for l in ref_losses))
            self.assertNotEqual(ref_losses[0], ref_losses[-1])

    def test_infonce_no_norm(self):
        self.check_invariance(["--norm", "none", "--tau", "0.1"])

    def test_hard_loss(self):
        # The top-K is taken over the global candidates.
        self.check_invariance(["--norm", "none", "--loss", "hard", "--hard_k", "12", "--tau", "0.2"])

    def test_sync_batch_norm(self):
        # BN statistics over the global batch. The layer is exact (mpi_sync_batch_norm_test: 1e-9 in float64 at
        # 1-4 ranks); in fp32 training the BN biases are tiny sums of cancelling gradients, so summation-order noise
        # shows most in them: the parameters are compared as one vector here. Batch norm over 128 rows at a large lr
        # amplifies fp32 rounding ~10x per step (even one process, sync vs BatchNorm2d, drifts 4e-5 by step 4 at
        # lr 0.1), so this run takes a smaller lr.
        self.check_invariance(["--norm", "sync", "--loss", "infonce", "--tau", "0.2", "--lr", "0.003"],
                              whole_vector=True)

    def test_memory_bank(self):
        # The bank is replicated and updated from the all-gathered (index, feature) pairs on every rank.
        self.check_invariance(["--norm", "none", "--negatives", "memory_bank", "--tau", "0.07"])


def two_rank_runs(test, tmp, variants):
    """Runs SMALL plus each variant's arguments on 2 ranks, in tmp/<name>; returns name -> (result, the process)."""
    runs = {}
    for name, extra in variants.items():
        out = os.path.join(tmp, name)
        proc = run_train(2, SMALL + extra + ["--out_dir", out])
        test.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        runs[name] = (read_result(out), proc)
    return runs


class PrefetchTest(unittest.TestCase):
    """Views made ahead on a background thread are the views made in the step: the same run to the last bit."""

    def test_prefetch_does_not_change_the_run(self):
        for negatives in ("batch", "memory_bank"):
            with TempDir() as tmp:
                runs = two_rank_runs(self, tmp, {depth: ["--batch_size", "64", "--negatives", negatives,
                                                         "--prefetch_steps", depth] for depth in ("0", "2")})
                results = {depth: result for depth, (result, _) in runs.items()}
                self.assertEqual(results["2"]["config"]["data"]["prefetch_steps"], 2)
                self.assertEqual(results["0"]["step_loss"], results["2"]["step_loss"], negatives)
                self.assertEqual(len(results["0"]["step_loss"]), 5)


class BatchedAugmentationTest(unittest.TestCase):
    """--augmentation batched (the GPU's default) on the CPU: the same views to float rounding (2e-5), so the first
    step's loss agrees to 1e-5 of itself with the per-image views', and the short run stays close, on 2 ranks with
    both kinds of negatives."""

    def test_batched_views_train_as_the_per_image_ones(self):
        for negatives in ("batch", "memory_bank"):
            with TempDir() as tmp:
                runs = two_rank_runs(self, tmp, {where: ["--batch_size", "64", "--negatives", negatives,
                                                         "--augmentation", where]
                                                 for where in ("per_image", "batched")})
                losses = {where: [s["loss"] for s in result["step_loss"]] for where, (result, _) in runs.items()}
                first, batched = losses["per_image"], losses["batched"]
                self.assertEqual(len(batched), 5)
                self.assertLessEqual(abs(first[0] - batched[0]), 1e-5 * abs(first[0]), negatives)
                for step, (a, b) in enumerate(zip(first, batched), 1):
                    self.assertLessEqual(abs(a - b), 1e-2 * abs(a), f"{negatives} step {step}: {a} vs {b}")


class HostSyncTest(unittest.TestCase):
    """--host_sync_every_steps (10 on a GPU) changes when the host reads the losses, not the run: every step's loss
    is recorded, to the last bit, also across an epoch's end and a log step that fall between reads."""

    def test_reading_the_losses_every_third_step_gives_the_same_run(self):
        with TempDir() as tmp:
            runs = two_rank_runs(self, tmp, {every: ["--batch_size", "32", "--epochs", "2", "--max_steps", "26",
                                                     "--log_every_steps", "7", "--host_sync_every_steps", every]
                                             for every in ("1", "3")})  # 20 steps an epoch
            results = {every: result for every, (result, _) in runs.items()}
            self.assertEqual(results["1"]["step_loss"], results["3"]["step_loss"])
            self.assertEqual([int(s["step"]) for s in results["3"]["step_loss"]], list(range(1, 27)))
            self.assertEqual(results["1"]["epochs"][0]["mean_loss"], results["3"]["epochs"][0]["mean_loss"])


class GradientBucketTest(unittest.TestCase):
    """--gradient_bucket_kib changes how the gradients are sent (how many all-reduces during backward), not what they
    are: with 2 ranks each sum is a + b, so the runs agree to the last bit."""

    def test_bucket_size_does_not_change_the_run(self):
        with TempDir() as tmp:
            runs = two_rank_runs(self, tmp, {kib: ["--batch_size", "64", "--gradient_bucket_kib", kib]
                                             for kib in ("1", "4096")})
            results = {kib: result for kib, (result, _) in runs.items()}
            logs = {kib: proc.stdout + proc.stderr for kib, (_, proc) in runs.items()}
            self.assertIn("gradients all-reduced in 1 buckets of about 4096 KiB", logs["4096"])
            self.assertRegex(logs["1"], r"gradients all-reduced in ([2-9]|\d\d+) buckets of about 1 KiB")
            self.assertEqual(results["1"]["step_loss"], results["4096"]["step_loss"])
            self.assertEqual(len(results["1"]["step_loss"]), 5)


class Bf16Test(unittest.TestCase):
    """--bf16 on the CPU: the encoder's convs and matmuls run in bf16 (the losses move off the fp32 run's) while
    training stays the same computation (within bf16 rounding: 8 mantissa bits) and the saved model is fp32."""

    def test_bf16_tracks_fp32(self):
        with TempDir() as tmp:
            results = {}
            for precision in ("fp32", "bf16"):
                out = os.path.join(tmp, precision)
                # lr 0.02, not SMALL's 0.1: at 0.1 five steps of batch norm are chaotic enough that bf16 rounding
                # alone moved step 5's loss by 21% (4.02 vs 4.86) on an AMD EPYC with AVX2 only (bf16 emulated),
                # against ~2% with AVX512-BF16; at 0.02 it is <= 1.1% on the former.
                proc = run_train(2, SMALL + ["--batch_size", "64", "--lr", "0.02", "--out_dir", out,
                                             "--bf16=%s" % (precision == "bf16")])
                self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
                results[precision] = (read_result(out), load_params(out))
            fp32, bf16 = ([s["loss"] for s in results[p][0]["step_loss"]] for p in ("fp32", "bf16"))
            self.assertTrue(results["bf16"][0]["config"]["bf16"])
            self.assertEqual(len(bf16), 5)
            self.assertNotEqual(fp32, bf16, "bf16 autocast changed nothing: did the encoder run in fp32?")
            # Step 1 is the same parameters forward: bf16 rounding (2^-8) alone. Later steps also carry the updates'
            # differences, which batch norm amplifies.
            self.assertLessEqual(abs(fp32[0] - bf16[0]), 4e-3 * fp32[0], f"step 1: fp32 {fp32[0]} vs bf16 {bf16[0]}")
            for step, (a, b) in enumerate(zip(fp32, bf16), 1):
                self.assertLessEqual(abs(a - b), 0.05 * a, f"step {step}: fp32 {a} vs bf16 {b}")
            self.assertLess(bf16[-1], bf16[0])
            import torch
            saved = torch.jit.load(os.path.join(tmp, "bf16", "model.pt"))
            self.assertEqual({p.dtype for p in saved.parameters()}, {torch.float32})
            params = results["bf16"][1]
            self.assertEqual(params.keys(), results["fp32"][1].keys())
            diff = sum((p - results["fp32"][1][n]).norm().item() ** 2 for n, p in params.items()) ** 0.5
            norm = sum(p.norm().item() ** 2 for p in params.values()) ** 0.5
            self.assertLessEqual(diff / norm, 0.05, f"relative parameter difference {diff / norm}")


class ConvergenceCurveTest(unittest.TestCase):
    """Every epoch records the curve's bounded evaluation and the weight norm; the full evaluation stays in final."""

    def test_curve_every_epoch(self):
        with TempDir() as tmp:
            out = os.path.join(tmp, "curve")
            proc = run_train(2, ["--train_subset", "640", "--test_subset", "256", "--batch_size", "64",
                                 "--epochs", "3", "--linear_epochs", "1", "--curve_train_samples", "300",
                                 "--out_dir", out])
            self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
            result = read_result(out)
            epochs = result["epochs"]
            self.assertEqual([e["epoch"] for e in epochs], [1, 2, 3])
            for e in epochs:
                m = e["metrics"]
                self.assertEqual((m["knn_train_samples"], m["knn_test_samples"], m["metric_samples"]), (300, 256, 256))
                self.assertTrue(0 < m["uniformity"] < 4 and -1 <= m["tolerance"] <= 1, m)
                self.assertEqual(m.get("linear_top1", 0), 0)  # the curve has no linear classifier
                self.assertGreater(e["weight_norm"], 0)
            self.assertNotEqual(epochs[0]["metrics"]["uniformity"], epochs[2]["metrics"]["uniformity"])
            self.assertNotEqual(epochs[0]["weight_norm"], epochs[2]["weight_norm"])
            final = result["final"]
            self.assertEqual((final["knn_train_samples"], final["knn_test_samples"]), (640, 256))
            self.assertIn("linear_top1", final)
            # Uniformity and tolerance use the same test sample in the curve and the full evaluation.
            self.assertAlmostEqual(final["uniformity"], epochs[2]["metrics"]["uniformity"], places=9)

    def test_progress_rate_leaves_the_evaluations_out(self):
        # Two steps an epoch, a log line an epoch, and after each epoch an evaluation of 3,000 test images that takes
        # several times the two steps: the logged rate of the last window (steps 5-6, after epoch 2's evaluation)
        # is the steps' own, as the epoch's record is. Counting the evaluation made it ~5x lower.
        with TempDir() as tmp:
            out = os.path.join(tmp, "rate")
            proc = run_train(1, ["--train_subset", "256", "--test_subset", "3000", "--batch_size", "128",
                                 "--epochs", "3", "--log_every_steps", "2", "--eval_every_epochs", "1",
                                 "--linear_epochs", "1", "--threads", "1", "--out_dir", out])
            self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
            with open(os.path.join(out, "progress.json")) as f:
                progress = json.load(f)
            epoch = read_result(out)["epochs"][2]
            self.assertEqual(progress["step"], 6)
            self.assertGreater(progress["images_per_second"], 0.6 * epoch["images_per_second"], (progress, epoch))

    def test_no_curve(self):
        with TempDir() as tmp:
            out = os.path.join(tmp, "nocurve")
            proc = run_train(1, SMALL + ["--batch_size", "64", "--curve_train_samples", "0", "--out_dir", out])
            self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
            result = read_result(out)
            # Without the curve the one epoch's metrics are the full evaluation's, as before the curve existed.
            self.assertEqual(result["epochs"][-1]["metrics"]["knn_train_samples"], 640)
            self.assertEqual(result["final"]["knn_top1"], result["epochs"][-1]["metrics"]["knn_top1"])


class BadInputTest(unittest.TestCase):
    """mpirun -np 2 with bad input: every rank exits non-zero with one clear sentence, and nothing hangs."""

    def assert_clean_failure(self, proc, expected):
        self.assertNotEqual(proc.returncode, 0, proc.stderr[-2000:])
        self.assertIn(expected, proc.stderr)
        self.assertNotIn("Segmentation fault", proc.stderr)
        self.assertNotIn("terminate called", proc.stderr)

    def test_unknown_flag(self):
        with TempDir() as tmp:
            proc = run_train(2, ["--no_such_flag=3", "--out_dir", tmp], timeout=60)
            self.assert_clean_failure(proc, "no_such_flag")

    def test_invalid_value(self):
        with TempDir() as tmp:
            proc = run_train(2, ["--tau", "-1", "--out_dir", tmp], timeout=60)
            self.assert_clean_failure(proc, "loss.tau must be > 0")
            proc = run_train(2, ["--loss", "fancy", "--out_dir", tmp], timeout=60)
            self.assert_clean_failure(proc, "--loss: invalid value 'fancy'")
            proc = run_train(2, ["--batch_size", "abc", "--out_dir", tmp], timeout=60)
            self.assert_clean_failure(proc, "--batch_size")
            proc = run_train(2, ["--prefetch_steps", "3", "--out_dir", tmp], timeout=60)
            self.assert_clean_failure(proc, "--prefetch_steps: data.prefetch_steps must be 0, 1 or 2")

    def test_malformed_config(self):
        with TempDir() as tmp:
            config = os.path.join(tmp, "run.pbtxt")
            with open(config, "w") as f:
                f.write("loss { tau: 0.1 }\nno_such_field: 3\n")
            proc = run_train(2, ["--config", config, "--out_dir", tmp], timeout=60)
            self.assert_clean_failure(proc, "run.pbtxt")
            self.assertIn("no_such_field", proc.stderr)

    def test_missing_data_dir(self):
        with TempDir() as tmp:
            missing = os.path.join(tmp, "no-such-dir")
            proc = run_train(2, ["--data_dir", missing, "--out_dir", os.path.join(tmp, "out")], timeout=60)
            self.assert_clean_failure(proc, missing)

    def test_corrupt_gz(self):
        with TempDir() as tmp:
            data = os.path.join(tmp, "data")
            shutil.copytree(FASHION_MNIST, data)
            images = os.path.join(data, "train-images-idx3-ubyte.gz")
            with open(images, "rb") as f:
                raw = bytearray(f.read())
            raw[len(raw) // 2: len(raw) // 2 + 64] = b"\xff" * 64  # damage the deflate stream
            with open(images, "wb") as f:
                f.write(raw)
            proc = run_train(2, ["--data_dir", data, "--out_dir", os.path.join(tmp, "out")], timeout=120)
            self.assert_clean_failure(proc, "train-images-idx3-ubyte.gz")

    def test_truncated_gz(self):
        with TempDir() as tmp:
            data = os.path.join(tmp, "data")
            shutil.copytree(FASHION_MNIST, data)
            labels = os.path.join(data, "t10k-labels-idx1-ubyte.gz")
            with gzip.open(labels, "rb") as f:
                raw = f.read()
            with gzip.open(labels, "wb") as f:
                f.write(raw[: len(raw) // 2])
            proc = run_train(2, ["--data_dir", data, "--out_dir", os.path.join(tmp, "out")], timeout=120)
            self.assert_clean_failure(proc, "t10k-labels-idx1-ubyte.gz")

    def test_unwritable_out_dir(self):
        with TempDir() as tmp:
            blocker = os.path.join(tmp, "file")
            open(blocker, "w").close()
            proc = run_train(2, ["--out_dir", os.path.join(blocker, "out"), "--train_subset", "256"], timeout=60)
            self.assert_clean_failure(proc, "cannot create output directory")


if __name__ == "__main__":
    unittest.main()
