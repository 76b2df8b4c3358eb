"""Shared pieces of the tempered-sweep end-to-end tests (sweep_e2e_test.py, sweep_slurm_test.py, ...).

The sweep runs a wrapper instead of tempered-train (through --train_binary, the flag a user would use to wrap the
trainer). The wrapper records every start of every run with what it found: the run's result.json status, how many
trainers of the same run were alive, the GPUs it was given (CUDA_VISIBLE_DEVICES, which Slurm sets) and the rung it
was to pause at (--pause_at_fraction, successive halving). It can also make the first attempt of one run fail for
real, by handing the trainer a data directory that does not exist. Then it execs the real tempered-train, so signals
reach it.
"""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

BIN = os.environ.get("TEMPERED_BIN", os.path.join(os.path.dirname(__file__), "..", "build"))
SWEEP = os.path.join(BIN, "launch", "tempered-sweep")
TRAIN = os.path.abspath(os.path.join(BIN, "trainer", "tempered-train"))

# 2 losses x 2 temperatures, 24 steps of 128 images each: about 10 s per run on one core.
TINY_SPEC = """
base {
  data { train_subset: 1024 test_subset: 512 }
  epochs: 3
  batch_size: 128
  checkpoint_every_steps: 4
  eval { metric_samples: 256 knn_k: 20 linear_epochs: 2 }
  log_every_steps: 1
}
loss: ["infonce", "hard"]
tau: [0.1, 0.5]
max_attempts: 2
"""

WRAPPER = r'''#!/usr/bin/python3
import json, os, sys
REAL, LOG, FAIL_ONCE = {real!r}, {log!r}, {fail_once!r}
args = sys.argv[1:]
out = args[args.index("--out_dir") + 1]

def status():
    try:
        with open(os.path.join(out, "result.json")) as f:
            return json.load(f).get("status", "")
    except (OSError, ValueError):
        return ""

def concurrent():
    n = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        n += argv[0] == REAL and out in argv
    return n

event = {{"run": os.path.basename(out), "status_before": status(), "concurrent": concurrent(), "pid": os.getpid(),
         "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
         "pause_at_fraction": args[args.index("--pause_at_fraction") + 1] if "--pause_at_fraction" in args else None}}
marker = os.path.join(out, "forced_failure")
if FAIL_ONCE and FAIL_ONCE in out and not os.path.exists(marker):
    open(marker, "w").close()
    args += ["--data_dir", "/nonexistent/tempered-data"]
    event["forced_failure"] = True
with open(LOG, "a") as f:
    f.write(json.dumps(event) + "\n")
os.execv(REAL, [REAL] + args)
'''


class SweepFixture:
    """A temporary sweep directory, its spec and the recording wrapper."""

    def __init__(self, fail_once=None):
        for path in (SWEEP, TRAIN):
            if not os.access(path, os.X_OK):
                raise AssertionError("%s is missing: build tempered-sweep and tempered-train (TEMPERED_BIN=%s)"
                                     % (path, BIN))
        self.root = tempfile.mkdtemp(prefix="sweep_e2e.")
        self.out_dir = os.path.join(self.root, "sweep")
        self.spec = os.path.join(self.root, "tiny.pbtxt")
        self.log = os.path.join(self.root, "starts.jsonl")
        self.wrapper = os.path.join(self.root, "train-wrapper")
        with open(self.spec, "w") as f:
            f.write(TINY_SPEC)
        with open(self.wrapper, "w") as f:
            f.write(WRAPPER.format(real=TRAIN, log=self.log, fail_once=fail_once))
        os.chmod(self.wrapper, 0o755)

    def cleanup(self):
        if os.environ.get("SWEEP_TEST_KEEP"):  # keep the sweep directory for a look after the test
            print("kept", self.root)
        else:
            shutil.rmtree(self.root, ignore_errors=True)

    def command(self, *extra):
        return [SWEEP, "--spec", self.spec, "--out_dir", self.out_dir, "--train_binary", self.wrapper,
                "--poll_seconds", "0.5"] + list(extra)

    def start(self, *extra, env=None):
        """Starts the coordinator; its output goes to a file named after the phase."""
        with open(os.path.join(self.root, "coordinator.%d.log" % time.monotonic_ns()), "w") as out:
            return subprocess.Popen(self.command(*extra), stdout=out, stderr=subprocess.STDOUT, env=env)

    def run(self, *extra, timeout=240, env=None):
        return subprocess.run(self.command(*extra), capture_output=True, text=True, timeout=timeout, env=env)

    def state(self):
        try:
            with open(os.path.join(self.out_dir, "sweep_state.json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {"runs": []}

    def runs(self):
        return self.state().get("runs", [])

    def result(self, run):
        try:
            with open(os.path.join(self.out_dir, run["run_dir"], "result.json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def progress_step(self, run):
        try:
            with open(os.path.join(self.out_dir, run["run_dir"], "progress.json")) as f:
                return json.load(f)["step"]
        except (OSError, ValueError, KeyError):
            return 0

    def starts(self):
        if not os.path.exists(self.log):
            return []
        with open(self.log) as f:
            return [json.loads(line) for line in f]

    def trainers(self):
        """pid -> run directory of every live tempered-train of this sweep."""
        found = {}
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    argv = f.read().decode(errors="replace").split("\0")
                with open("/proc/%s/stat" % pid) as f:
                    if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                        continue
            except (OSError, IndexError):
                continue
            if argv[0] == TRAIN and "--out_dir" in argv:
                run_dir = argv[argv.index("--out_dir") + 1]
                if run_dir.startswith(self.out_dir + "/"):
                    found[int(pid)] = run_dir
        return found

    def kill_leftovers(self):
        """Teardown after a failed test: SIGKILL this sweep's trainers (found by their own --out_dir)."""
        for pid in self.trainers():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out after %d s waiting for %s" % (timeout, what))
