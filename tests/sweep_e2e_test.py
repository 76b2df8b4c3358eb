"""End-to-end test of tempered-sweep's local backend: a tiny real sweep (2 losses x 2 temperatures) that is stopped
with SIGTERM, then has its coordinator and one of its runs SIGKILLed mid-way, and is resumed each time by re-running
the same command. Every point must finish exactly once, with its results, and nothing may be left running.
Run from tests/ with TEMPERED_BIN=<build dir>: /usr/bin/python3 -m unittest -v sweep_e2e_test
"""
import csv
import json
import os
import signal
import subprocess
import unittest

from sweep_support import SweepFixture, wait_until


class LocalSweepTest(unittest.TestCase):
    def setUp(self):
        self.f = SweepFixture()
        self.addCleanup(self.f.cleanup)
        self.addCleanup(self.f.kill_leftovers)

    def running_with_progress(self, n):
        runs = [r for r in self.f.runs() if r.get("state") == "RUNNING" and self.f.progress_step(r) >= 2]
        return runs if len(runs) >= n else None

    def test_bad_spec_is_rejected_before_anything_runs(self):
        with open(self.f.spec, "w") as spec:
            spec.write('tau: [0.1, 0]\n')
        r = self.f.run(timeout=30)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("every tau must be > 0", r.stderr)
        self.assertEqual(r.stderr.count("\n"), 1, r.stderr)  # one sentence
        self.assertFalse(os.path.exists(self.f.out_dir))

    def test_sigterm_then_sigkill_then_resume_finishes_every_point_once(self):
        # Phase 1: SIGTERM stops the sweep and its runs cleanly (the trainers checkpoint and say INTERRUPTED).
        coordinator = self.f.start()
        wait_until(lambda: self.running_with_progress(2), 120, "two runs in progress")
        second = self.f.run(timeout=30)  # one coordinator per sweep directory
        self.assertEqual(second.returncode, 2, second.stdout + second.stderr)
        self.assertIn("another tempered-sweep on %s holds %s/.lock; wait for it or stop it first"
                      % (self.f.out_dir, self.f.out_dir), second.stderr)
        coordinator.send_signal(signal.SIGTERM)
        self.assertEqual(coordinator.wait(timeout=60), 128 + signal.SIGTERM)
        self.assertEqual(self.f.trainers(), {}, "the stopped sweep left trainers running")
        states = [r["state"] for r in self.f.runs()]
        self.assertNotIn("RUNNING", states)
        interrupted = [r for r in self.f.runs() if (self.f.result(r) or {}).get("status") == "INTERRUPTED"]
        self.assertGreaterEqual(len(interrupted), 1, "SIGTERM should reach the trainers, which then checkpoint")

        # Phase 2: SIGKILL the coordinator and one run mid-way; the other run goes on, orphaned.
        coordinator = self.f.start()
        running = wait_until(lambda: self.running_with_progress(2), 120, "two runs in progress again")
        coordinator.kill()
        coordinator.wait(timeout=30)
        trainers = wait_until(self.f.trainers, 10, "the orphaned trainers")
        victim_dir = os.path.join(self.f.out_dir, running[0]["run_dir"])
        victims = [pid for pid, run_dir in trainers.items() if run_dir == victim_dir]
        self.assertEqual(len(victims), 1, trainers)
        os.kill(victims[0], signal.SIGKILL)

        # Phase 3: the same command again resumes and finishes.
        r = self.f.run()
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertTrue(r.stdout.rstrip().endswith("report: " + os.path.join(self.f.out_dir, "report.md")), r.stdout)
        # Not a terminal: the sweep's progress as log lines, the last with every run finished.
        self.assertIn("sweep progress: 4 runs: 4 finished, 0 running, 0 pending, 0 failed; slots 0/", r.stdout)
        self.check_every_point_finished_once(victim=running[0]["id"])
        self.assertEqual(self.f.trainers(), {})

        # Phase 4: re-running a finished sweep runs nothing.
        starts = len(self.f.starts())
        r = self.f.run(timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(len(self.f.starts()), starts)
        status = subprocess.run([self.f.command()[0], "--status", self.f.out_dir], capture_output=True, text=True)
        self.assertIn("4 runs: 4 finished, 0 running, 0 pending, 0 failed; slots 0/", status.stdout)
        self.assertIn("; ETA 0:00:00 (mean of 4 finished runs: ", status.stdout)
        best = status.stdout.split("best run so far per loss, by final kNN top-1 (result.json final.knn_top1):\n")
        self.assertEqual(len(best), 2, status.stdout)
        self.assertEqual([line.split()[0] for line in best[1].splitlines()[:2]], ["infonce", "hard"], status.stdout)

    def test_a_writer_the_state_does_not_record_is_never_doubled(self):
        # A coordinator killed between launching a run and saving its state leaves a writer that the state calls
        # PENDING. Made for real: kill the coordinator while runs are in progress, then put its state back to what
        # it was before it recorded the launches.
        coordinator = self.f.start()
        running = wait_until(lambda: self.running_with_progress(1), 120, "a run in progress")
        coordinator.kill()
        coordinator.wait(timeout=30)
        state = self.f.state()
        for run in state["runs"]:
            if run["state"] == "RUNNING":
                run.update(state="PENDING", pid="0", pid_start_ticks="0", host="")
        with open(os.path.join(self.f.out_dir, "sweep_state.json"), "w") as f:
            json.dump(state, f)
        self.assertNotEqual(self.f.trainers(), {}, "the orphaned writers should still run")

        r = self.f.run()
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("is being written by a tempered-train this coordinator did not start", r.stdout)
        starts = self.f.starts()
        self.assertEqual([s for s in starts if s["concurrent"] > 0], [], "a second writer was started")
        for run in self.f.runs():
            self.assertEqual(run["state"], "FINISHED", run)
            self.assertEqual(self.f.result(run)["status"], "FINISHED", run)
        orphan = os.path.basename(running[0]["run_dir"])
        self.assertEqual(len([s for s in starts if s["run"] == orphan]), 1, "the orphan's run was started again")

    def check_every_point_finished_once(self, victim):
        runs = self.f.runs()
        self.assertEqual(len(runs), 4)
        starts = self.f.starts()
        for run in runs:
            name = os.path.basename(run["run_dir"])
            self.assertEqual(run["state"], "FINISHED", run)
            result = self.f.result(run)
            self.assertEqual(result["status"], "FINISHED", name)
            self.assertGreater(result["final"]["knn_top1"], 10.0, name)  # better than chance on 10 classes
            mine = [s for s in starts if s["run"] == name]
            self.assertEqual(len(mine), run["attempts"], (name, mine))
        # Never a start of a finished run, never two trainers of one run at once.
        self.assertEqual([s for s in starts if s["status_before"] == "FINISHED"], [])
        self.assertEqual([s for s in starts if s["concurrent"] > 0], [])
        killed = next(r for r in runs if r["id"] == victim)
        self.assertGreaterEqual(killed["attempts"], 3)  # SIGTERM-ed, SIGKILL-ed, then finished
        with open(os.path.join(self.f.out_dir, "results.csv")) as f:
            rows = list(csv.DictReader(f))
        self.assertEqual(len(rows), 4)
        for row in rows:
            self.assertEqual(row["status"], "finished")
            for column in ("loss", "tau", "hard_k", "seed", "knn_top1", "linear_top1", "uniformity", "alignment",
                           "tolerance", "wall_seconds", "run_dir"):
                self.assertNotEqual(row[column], "", column)
        self.assertEqual(sorted((r["loss"], r["tau"]) for r in rows),
                         [("hard", "0.1"), ("hard", "0.5"), ("infonce", "0.1"), ("infonce", "0.5")])
        with open(os.path.join(self.f.out_dir, "report.md")) as f:
            report = f.read()
        for text in ("## Table 1", "| metric | τ=0.1 | τ=0.5 | hard τ=0.1 | hard τ=0.5 |", "## Best τ per loss",
                     "7a. hard: uniformity nearly constant", "plots/relative_penalty.png"):
            self.assertIn(text, report)
        for png in ("accuracy_vs_tau", "uniformity_vs_tau", "tolerance_vs_tau", "uniformity_vs_tolerance",
                    "relative_penalty"):
            with open(os.path.join(self.f.out_dir, "plots", png + ".png"), "rb") as f:
                self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n", png)


if __name__ == "__main__":
    unittest.main()
