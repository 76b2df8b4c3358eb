"""Load: a sweep of 32 tiny runs, 4 at a time on the local backend (1 rank x 1 thread each, a core budget of 4 on
however many cores there are), finishes with every result and leaves no process behind.
Run from tests/ with TEMPERED_BIN=<build dir>: /usr/bin/python3 -m unittest -v sweep_load_test
"""
import csv
import os
import time
import unittest

from sweep_support import SweepFixture

# 8 temperatures x 4 seeds = 32 runs of 2 steps each, no linear evaluation, small kNN and metric samples.
LOAD_SPEC = """
base {
  data { train_subset: 256 test_subset: 128 }
  epochs: 1
  max_steps: 2
  batch_size: 64
  eval { metric_samples: 64 knn_k: 10 linear_epochs: 0 }
  log_every_steps: 1
}
loss: ["infonce"]
tau: [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0]
seed: [1, 2, 3, 4]
ranks_per_run: 1
threads_per_rank: 1
core_budget: 4
max_attempts: 1
"""
RUNS = 32
PARALLEL = 4


class SweepLoadTest(unittest.TestCase):
    def setUp(self):
        self.f = SweepFixture()
        self.addCleanup(self.f.cleanup)
        self.addCleanup(self.f.kill_leftovers)
        with open(self.f.spec, "w") as spec:
            spec.write(LOAD_SPEC)

    def test_32_runs_4_at_a_time(self):
        start = time.monotonic()
        coordinator = self.f.start()
        most = 0  # the most trainers seen alive at once
        while coordinator.poll() is None:
            most = max(most, len(self.f.trainers()))
            self.assertLess(time.monotonic() - start, 240, "the sweep did not finish in 4 minutes")
            time.sleep(0.1)
        elapsed = time.monotonic() - start
        self.assertEqual(coordinator.returncode, 0, self.coordinator_log())
        self.assertLessEqual(most, PARALLEL, "more runs at once than the core budget allows")
        self.assertGreaterEqual(most, PARALLEL - 1, "the sweep never ran %d runs at once" % PARALLEL)

        runs = self.f.runs()
        self.assertEqual(len(runs), RUNS)
        for run in runs:
            self.assertEqual(run["state"], "FINISHED", run)
            result = self.f.result(run)
            self.assertEqual(result["status"], "FINISHED", run["run_dir"])
            self.assertEqual(int(result["global_steps"]), 2, run["run_dir"])
            self.assertIn("knn_top1", result["final"], run["run_dir"])
        self.assertEqual(len(self.f.starts()), RUNS)  # one attempt each: nothing failed and was retried
        with open(os.path.join(self.f.out_dir, "results.csv")) as f:
            rows = list(csv.DictReader(f))
        self.assertEqual(len(rows), RUNS)
        self.assertEqual({row["status"] for row in rows}, {"finished"})
        self.assertEqual(len({(row["tau"], row["seed"]) for row in rows}), RUNS)

        # No trainer, mpirun or wrapper of this sweep is left, not even a zombie the coordinator forgot to reap.
        self.assertEqual(self.f.trainers(), {})
        self.assertEqual(self.processes_of_sweep(), [])
        print("\n%d runs, at most %d at once, in %.0f s" % (RUNS, most, elapsed))

    def processes_of_sweep(self):
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    cmdline = f.read().decode(errors="replace")
            except OSError:
                continue
            if self.f.root in cmdline and int(pid) != os.getpid():
                found.append((int(pid), cmdline.replace("\0", " ")))
        return found

    def coordinator_log(self):
        logs = sorted(n for n in os.listdir(self.f.root) if n.startswith("coordinator."))
        with open(os.path.join(self.f.root, logs[-1])) as f:
            return f.read()[-3000:]


if __name__ == "__main__":
    unittest.main()
