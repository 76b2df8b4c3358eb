"""End-to-end test of successive halving over tau (SweepSpec.pruning) with the real tempered-sweep and tempered-train.

Four infonce tau and one simple run (16 steps each), rungs at 0.25 and 0.5 of the steps, keep 0.5: every infonce run
pauses at step 4 and is evaluated there; the best two tau (by kNN top-1 at the rung) go on to step 8, the best one of
those to the end; the simple run, alone in its loss, never pauses. Pruned runs keep their checkpoints: a rerun without
pruning resumes them to full length. A paused and resumed run is the run that never paused, to the bit (its step
losses and final metrics equal a direct tempered-train run of the same run.pbtxt).
Run from tests/ with TEMPERED_BIN=<build dir>: /usr/bin/python3 -m unittest -v sweep_pruning_test
"""
import json
import os
import subprocess
import tempfile
import unittest

from sweep_support import TRAIN, SweepFixture

SPEC = """
base {
  data { train_subset: 512 test_subset: 256 }
  epochs: 2
  batch_size: 64
  eval { metric_samples: 128 knn_k: 5 linear_epochs: 1 curve_train_samples: 256 }
  log_every_steps: 4
}
loss: ["infonce", "simple"]
tau: [0.05, 0.2, 0.5, 1.0]
max_attempts: 1
"""
PRUNING = "pruning { rungs: [0.25, 0.5] keep: 0.5 }\n"
STEPS = 16  # 512 images / 64 per step x 2 epochs


class SweepPruningTest(unittest.TestCase):
    def setUp(self):
        self.sweep = SweepFixture()
        self.addCleanup(self.sweep.cleanup)
        self.addCleanup(self.sweep.kill_leftovers)

    def write_spec(self, text):
        with open(self.sweep.spec, "w") as f:
            f.write(text)

    def run_sweep(self):
        done = self.sweep.run(timeout=300)
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        return done.stdout

    def by_name(self):
        return {os.path.basename(r["run_dir"]): r for r in self.sweep.runs()}

    def unpaused_result(self, run):
        """The same run.pbtxt trained straight through by tempered-train, in a directory of its own."""
        out = tempfile.mkdtemp(dir=self.sweep.root)
        config = os.path.join(self.sweep.out_dir, run["run_dir"], "run.pbtxt")
        done = subprocess.run([TRAIN, "--config", config, "--out_dir", out], capture_output=True, text=True,
                              timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"))
        self.assertEqual(done.returncode, 0, done.stderr[-2000:])
        with open(os.path.join(out, "result.json")) as f:
            return json.load(f)

    def assert_same_run(self, a, b):
        self.assertEqual(a["step_loss"], b["step_loss"])
        self.assertEqual(a["final"], b["final"])

    def test_halving_keeps_the_best_tau_and_a_pruned_run_resumes_to_full_length(self):
        self.write_spec(SPEC + PRUNING)
        self.run_sweep()
        runs = self.by_name()
        infonce = {n: r for n, r in runs.items() if n.startswith("infonce")}
        simple = [r for n, r in runs.items() if n.startswith("simple")]
        self.assertEqual((len(infonce), len(simple)), (4, 1), sorted(runs))

        # Who stopped where: two at rung 1, one at rung 2, one to the end.
        outcome = sorted((r["state"], len(r.get("rung_scores", []))) for r in infonce.values())
        self.assertEqual(outcome, [("FINISHED", 2), ("PRUNED", 1), ("PRUNED", 1), ("PRUNED", 2)])
        # Kept by score: every tau that passed a rung scored at least as well there as every tau pruned at it.
        for k in (0, 1):
            at_rung = [r for r in infonce.values() if len(r.get("rung_scores", [])) > k]
            passed = [r["rung_scores"][k] for r in at_rung if len(r["rung_scores"]) > k + 1 or r["state"] == "FINISHED"]
            pruned = [r["rung_scores"][k] for r in at_rung if r["state"] == "PRUNED" and len(r["rung_scores"]) == k + 1]
            self.assertGreaterEqual(min(passed), max(pruned), (k, passed, pruned))
        # Pruned runs stopped at their rung's step with a checkpoint and the evaluation there.
        for r in infonce.values():
            result = self.sweep.result(r)
            steps = {1: 4, 2: 8}[len(r["rung_scores"])] if r["state"] == "PRUNED" else STEPS
            self.assertEqual((int(result["global_steps"]), int(result["total_steps"])), (steps, STEPS), r["run_dir"])
            self.assertEqual(result["status"], "PAUSED" if r["state"] == "PRUNED" else "FINISHED")
            if r["state"] == "PRUNED":  # its last evaluation is the rung's
                self.assertAlmostEqual(result["final"]["knn_top1"], r["rung_scores"][-1], places=9)
            self.assertTrue(os.path.exists(os.path.join(self.sweep.out_dir, r["run_dir"], "checkpoint.pt")))
        # The simple run had nothing to be compared with: one attempt, never paused.
        self.assertEqual(simple[0]["state"], "FINISHED")
        pauses = {}
        for start in self.sweep.starts():
            pauses.setdefault(start["run"], []).append(start["pause_at_fraction"])
        self.assertEqual(pauses[os.path.basename(simple[0]["run_dir"])], [None])
        self.assertEqual(sorted(map(len, (pauses[n] for n in infonce))), [1, 1, 2, 3])

        with open(os.path.join(self.sweep.out_dir, "report.md")) as f:
            report = f.read()
        self.assertIn("## Successive halving", report)
        # 4 x 4 + 2 x 4 + 1 x 8 infonce steps and 16 simple ones, of 5 x 16.
        self.assertIn("Training steps: 48 of the 80 the runs would take at full length (60.0%)", report)
        self.assertIn("pruned at rung 2", report)

        # The tau that went through both rungs is the run that never paused.
        survivor = next(r for r in infonce.values() if r["state"] == "FINISHED")
        self.assert_same_run(self.sweep.result(survivor), self.unpaused_result(survivor))

        # Without pruning, the same sweep resumes the pruned runs from their checkpoints to full length.
        pruned_early = next(r for r in infonce.values() if len(r["rung_scores"]) == 1)
        starts_before = len(self.sweep.starts())
        self.write_spec(SPEC)
        self.run_sweep()
        self.assertEqual({r["state"] for r in self.sweep.runs()}, {"FINISHED"})
        resumed = self.sweep.starts()[starts_before:]
        self.assertEqual(len(resumed), 3, resumed)
        self.assertTrue(all(s["pause_at_fraction"] is None for s in resumed), resumed)
        run_dir = os.path.join(self.sweep.out_dir, pruned_early["run_dir"])
        with open(os.path.join(run_dir, "attempt-1.result.json")) as f:
            self.assertEqual(json.load(f)["status"], "PAUSED")
        with open(os.path.join(run_dir, "attempt-2.err")) as f:
            self.assertIn("checkpoint.pt at global step 4", f.read())
        result = self.sweep.result(pruned_early)
        self.assertEqual(int(result["global_steps"]), STEPS)
        self.assert_same_run(result, self.unpaused_result(pruned_early))


if __name__ == "__main__":
    unittest.main()
