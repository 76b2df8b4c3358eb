"""End-to-end test of tempered-sweep's GPU slots on one node (local backend), on CPU runs: the coordinator hands out
GPU names through CUDA_VISIBLE_DEVICES whatever the run's device, so the scheduling is tested without a GPU.

A six-run grid with --gpus 0,1,2,3, gpus_per_rank 1 and ranks_per_run 2 has two GPU slots (the core budget would
allow four): never more than two runs at once, and every run's result.json shows, on both its ranks, the pair of
GPUs it was given, disjoint from the pair of every run that ran beside it. Mid-way the coordinator is SIGKILLed and
started again: the runs it left running keep their GPUs (SweepState.Run.gpus) and the new coordinator hands out
only the others until they end.
Run from tests/ with TEMPERED_BIN=<build dir>: /usr/bin/python3 -m unittest -v sweep_gpus_test
"""
import json
import os
import re
import subprocess
import unittest

from sweep_support import SweepFixture, wait_until

# 6 runs of 12 steps of 64 images, 2 ranks each: about 6 s per run here. Long enough that the runs orphaned in
# phase 1 (killed at step 1) are still running when the restarted coordinator looks: with 4 steps they had, once,
# ended first on a loaded machine.
GPU_SPEC = """
base {
  data { train_subset: 256 test_subset: 128 }
  epochs: 3
  batch_size: 64
  eval { metric_samples: 128 knn_k: 5 linear_epochs: 1 }
  log_every_steps: 1
}
loss: ["infonce", "hard"]
tau: [0.1, 0.2, 0.5]
ranks_per_run: 2
gpus_per_rank: 1
core_budget: 8
max_attempts: 1
"""

EVENT = re.compile(r"^\S+ (launched|finished|watching|found finished|FAILED|attempt \d+ of|sweep) (\S+?)[:,]?(?: |$)"
                   r"(?:.*GPUs ([^,)]+,[^,)]+))?")


def replay(log_lines):
    """Walks sweep.log in order. Returns [(event, run, gpus, {run: gpus} of the runs running beside it)] for every
    launch and every run watched after a restart (event "launched" or "watching"): the set of runs between their 'launched' (or 'watching') line and their end is
    a superset of the runs alive at that moment, since a run is spawned after the line of the one it replaces ended
    and reported ended after it exited."""
    running, seen, last = {}, [], None
    for line in log_lines:
        m = EVENT.match(line)
        if not m:
            continue
        what, run, gpus = m.groups()
        # A coordinator starts: it first names the runs it finds running ("watching"), then its "sweep" line. What
        # an earlier coordinator saw running is stale then; those runs are exactly the ones watched.
        if (what == "watching" or what == "sweep") and last not in ("watching", "sweep"):
            running = {}
        last = what
        if what in ("launched", "watching"):
            seen.append((what, run, gpus, dict(running)))
            running[run] = gpus
        else:
            running.pop(run, None)
    return seen


class GpuSlotsSweepTest(unittest.TestCase):
    def setUp(self):
        self.f = SweepFixture()
        self.addCleanup(self.f.cleanup)
        self.addCleanup(self.f.kill_leftovers)
        with open(self.f.spec, "w") as spec:
            spec.write(GPU_SPEC)

    def test_too_few_gpus_for_one_run_is_rejected_before_anything_runs(self):
        r = self.f.run("--gpus", "0", timeout=30)
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertEqual(r.stderr, "tempered-sweep: one run needs ranks_per_run x gpus_per_rank = 2 x 1 = 2 GPUs, "
                                   "but this node has 1 (--gpus)\n")
        self.assertFalse(os.path.exists(self.f.out_dir))
        r = self.f.run("--gpus", "0,,1", timeout=30)
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertIn("--gpus must be a comma-separated list of GPUs", r.stderr)

    def test_each_concurrent_run_has_its_own_gpus_also_across_a_restart(self):
        # Phase 1: two runs start; the coordinator is SIGKILLed while both run, and they go on, orphaned.
        coordinator = self.f.start("--gpus", "0,1,2,3")
        def two_running():
            runs = [r for r in self.f.runs() if r.get("state") == "RUNNING" and self.f.progress_step(r) >= 1]
            return runs if len(runs) == 2 else None
        first = wait_until(two_running, 60, "two runs in progress")
        self.assertEqual(sorted(r["gpus"] for r in first), ["0,1", "2,3"])
        coordinator.kill()
        coordinator.wait(timeout=30)

        # Phase 2: the same command finishes the sweep, waiting for the orphans' GPUs.
        r = self.f.run("--gpus", "0,1,2,3", timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("1 GPU(s) per rank of 0,1,2,3 (--gpus), up to 2 at a time", r.stdout)
        runs = self.f.runs()
        self.assertEqual([run["state"] for run in runs], ["FINISHED"] * 6)
        self.assertEqual([run.get("gpus", "") for run in runs], [""] * 6, "an ended run still holds GPUs")

        with open(os.path.join(self.f.out_dir, "sweep.log")) as log:
            events = replay(log.read().splitlines())
        given = {}
        most_at_once = 0
        for what, run, gpus, beside in events:
            self.assertIsNotNone(gpus, "%s started without GPUs" % run)
            self.assertLessEqual(len(beside), 1, "%s started beside %s" % (run, beside))
            most_at_once = max(most_at_once, len(beside) + 1)
            for other, other_gpus in beside.items():
                self.assertFalse(set(gpus.split(",")) & set(other_gpus.split(",")),
                                 "%s got GPUs %s while %s held %s" % (run, gpus, other, other_gpus))
            if what == "watching":
                self.assertEqual(gpus, given[run], "%s was watched with other GPUs than it was launched with" % run)
            given[run] = gpus
        self.assertEqual(most_at_once, 2, "no two runs ever ran together: the test shows nothing")
        self.assertEqual(len(given), 6)
        # The orphans take seconds more; the new coordinator starts at once, so it finds them still running.
        self.assertTrue([e for e in events if e[0] == "watching"], "no run was left for the restarted coordinator")

        # Every run's ranks saw the GPUs the coordinator gave it, and computed on their config's device.
        for run in runs:
            name = run["run_dir"].split("/")[-1]
            environment = self.f.result(run)["environment"]
            self.assertEqual([rank["cuda_visible_devices"] for rank in environment["ranks"]], [given[name]] * 2, name)
            self.assertEqual([rank["device"] for rank in environment["ranks"]], ["cpu", "cpu"])
            self.assertEqual([rank["rank"] for rank in environment["ranks"]], [0, 1])
            self.assertTrue(environment["mpi_version"].startswith("Open MPI"), environment)
            self.assertTrue(environment["libtorch_version"] and environment["tempered_commit"], environment)

        # Where each run ran, in --status and in the report.
        status = subprocess.run([self.f.command()[0], "--status", self.f.out_dir], capture_output=True, text=True)
        self.assertEqual(status.returncode, 0, status.stderr)
        # The coordinator's two GPU slots, recorded in the state: this machine's GPUs (none) do not count.
        self.assertIn("6 runs: 6 finished, 0 running, 0 pending, 0 failed; slots 0/2 in use", status.stdout)
        host = self.f.result(runs[0])["environment"]["ranks"][0]["host"]
        for name, gpus in given.items():
            self.assertRegex(status.stdout, r"%s .* %s GPUs %s cpu\n" % (name, re.escape(host), gpus))
        with open(os.path.join(self.f.out_dir, "report.md")) as report:
            md = report.read()
        self.assertIn("## Where the runs ran", md)
        for name, gpus in given.items():
            self.assertIn("| %s | %s GPUs %s cpu |" % (name, host, gpus), md)


if __name__ == "__main__":
    unittest.main()
