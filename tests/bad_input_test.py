"""Fault injection against the real binaries: bad sizes, malformed configs and sweep specs, damaged data, an
unwritable or full output directory, a loss that turns NaN, and a rank that dies or fails alone.

Every case must end in bounded time with a non-zero exit and one clear sentence naming the flag, field or file,
leave what an earlier run wrote intact, and leave no process behind. Complements train_e2e_test.BadInputTest
(unknown flag, invalid values, unknown config field, missing/corrupt/truncated data, out_dir under a regular file),
data_test.cc / npy_test.cc (damaged IDX and .npy files) and tests/fuzz (every parser, fuzzed).
"""
import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import unittest
import zipfile
from concurrent.futures import ThreadPoolExecutor

from resume_e2e_test import start_train, wait_for_step
from sweep_support import SWEEP
from tempered_testing import FASHION_MNIST, MPI_ARGS, MPIRUN, TRAIN, read_result, run_train

# A run of a few seconds: a small subset, no linear evaluation, small kNN / metric samples.
TINY = ["--train_subset", "512", "--test_subset", "256", "--linear_epochs", "0", "--batch_size", "64",
        "--log_every_steps", "1", "--seed", "5"]
# A model whose checkpoint is ~30 KiB, so that a run fits on a 256 KiB tmpfs (the full-disk case).
SMALL_MODEL_CONFIG = "model { width: 4 embed_dim: 16 }\neval { metric_samples: 64 knn_k: 10 }\n"


def processes_mentioning(text):
    """pid -> argv of every live (non-zombie) process whose command line mentions `text` (a test's temp dir)."""
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
        if int(pid) != os.getpid() and any(text in arg for arg in argv):
            found[int(pid)] = argv
    return found


def rank_pids(out_dir):
    """rank -> pid of the tempered-train processes writing to out_dir (the rank read from their environment)."""
    ranks = {}
    for pid, argv in processes_mentioning(out_dir).items():
        if argv[0] != TRAIN:
            continue
        try:
            with open("/proc/%d/environ" % pid, "rb") as f:
                env = dict(e.split("=", 1) for e in f.read().decode(errors="replace").split("\0") if "=" in e)
        except OSError:
            continue
        if "OMPI_COMM_WORLD_RANK" in env:
            ranks[int(env["OMPI_COMM_WORLD_RANK"])] = pid
    return ranks


def run_all(jobs):
    """Runs the callables in `jobs` four at a time (most of a rejected run is mpirun and LibTorch starting up, not
    computing); returns their results in order."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda job: job(), jobs))


def error_lines(stderr):
    """The trainer's own error lines (Open MPI adds its banners around them)."""
    return [line for line in stderr.splitlines() if line.startswith("tempered-train: error")]


def can_mount_tmpfs():
    probe = tempfile.mkdtemp(prefix="tempered-mount-probe-")
    try:
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", probe],
                          capture_output=True).returncode != 0:
            return False
        subprocess.run(["umount", probe], check=True)
        return True
    except OSError:
        return False
    finally:
        os.rmdir(probe)


MOUNT_OK = can_mount_tmpfs()


class FaultTest(unittest.TestCase):
    """A temp dir per test; afterwards no process may mention it (mpirun, tempered-train, wrappers)."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="tempered-bad-input-")
        self.mounts = []
        self.addCleanup(self.cleanup)

    def cleanup(self):
        leftovers = {}
        deadline = time.monotonic() + 10  # mpirun reaps its children right after it returns; give it a moment
        while time.monotonic() < deadline:
            leftovers = processes_mentioning(self.tmp)
            if not leftovers:
                break
            time.sleep(0.2)
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for mount in reversed(self.mounts):
            subprocess.run(["umount", "-l", mount], capture_output=True)
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.assertEqual(leftovers, {}, "processes left behind")

    def path(self, *parts):
        return os.path.join(self.tmp, *parts)

    def write(self, name, text):
        with open(self.path(name), "w" if isinstance(text, str) else "wb") as f:
            f.write(text)
        return self.path(name)

    def mount_tmpfs(self, name, options):
        target = self.path(name)
        os.makedirs(target, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", target], check=True)
        self.mounts.append(target)
        return target

    def assert_resumed_to_the_end(self, proc, out, steps):
        """The run resumed from out_dir's checkpoint and finished with every step's loss."""
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        self.assertIn("resumed from", proc.stderr)
        result = read_result(out)
        self.assertEqual(result["status"], "FINISHED")
        self.assertEqual([int(s["step"]) for s in result["step_loss"]], list(range(1, steps + 1)))

    def assert_clean_failure(self, proc, *expected, ranks=1):
        """Non-zero exit, every expected phrase in stderr, one error sentence from the trainer, no crash."""
        self.assertNotEqual(proc.returncode, 0, proc.stderr[-3000:])
        for phrase in expected:
            self.assertIn(phrase, proc.stderr)
        errors = error_lines(proc.stderr)
        self.assertEqual(len(errors), ranks, "expected %d error line(s):\n%s" % (ranks, proc.stderr[-3000:]))
        for bad in ("Segmentation fault", "terminate called", "Exception raised from", "frame #", "Aborted"):
            self.assertNotIn(bad, proc.stderr)


class SizesTest(FaultTest):
    def test_zero_and_negative_sizes(self):
        # A zero in a proto3 field without presence reads as unset: where the default is not zero, a flag of 0
        # would silently run with the default, so it is refused by name.
        unset = "it reads as unset, which takes the default"
        cases = [
            (["--batch_size", "0"], "--batch_size: invalid value '0' for batch_size: " + unset + " 256"),
            (["--batch_size", "-5"], "batch_size must be >= 2 (the global batch), got -5"),
            (["--epochs", "0"], "--epochs: invalid value '0' for epochs: " + unset + " 1"),
            (["--epochs", "-1"], "epochs must be >= 1, got -1"),
            (["--tau", "0"], "--tau: invalid value '0' for loss.tau: " + unset + " 0.2"),
            (["--train_subset", "-5"], "data.train_subset must be >= 0, got -5"),
            (["--test_subset", "-1"], "data.test_subset must be >= 0, got -1"),
            (["--max_steps", "-1"], "max_steps must be >= 0, got -1"),
            (["--log_every_steps", "0"], "--log_every_steps: invalid value '0' for log_every_steps: " + unset),
            (["--log_every_steps", "-1"], "log_every_steps must be >= 1, got -1"),
            (["--threads", "-2"], "threads must be >= 0, got -2"),
            (["--linear_epochs", "-1"], "eval.linear_epochs must be >= 0, got -1"),
            (["--hard_k", "-3"], "loss.hard_k must be >= 0, got -3"),
            (["--seed", "-1"], "--seed: invalid value '-1' for seed"),
            (["--lr", "inf"], "optim.lr must be finite, got inf"),  # inf passes lr > 0: it would train into NaN
            (["--tau", "nan"], "loss.tau must be finite, got nan"),
            (["--epochs", "3000000000"], "--epochs: invalid value '3000000000' for epochs"),
        ]
        outs = [self.path("out%d" % i) for i in range(len(cases))]
        procs = run_all([lambda flags=flags, out=out: run_train(2, TINY + flags + ["--out_dir", out], timeout=120)
                         for (flags, _), out in zip(cases, outs)])
        for (flags, expected), out, proc in zip(cases, outs, procs):
            with self.subTest(flags=flags):
                self.assert_clean_failure(proc, expected)
                self.assertFalse(os.path.exists(out), "a rejected config created its out_dir")

    def test_zero_and_negative_sizes_in_a_config_file(self):
        # In a file as on the command line: an explicit zero that would read as unset is refused with the file, line
        # and field (not silently replaced by the default), a negative names the file and line too, a flag names
        # itself (it overrides the file), and a field left out still takes its default.
        unset = "it reads as unset, which takes the default"
        cases = [
            ("epochs: 1\nbatch_size: 0\n", [], "line 2: invalid value 0 for batch_size: " + unset + " 256"),
            ("loss {\n  name: INFONCE\n  tau: 0\n}\n", [], "line 3: invalid value 0 for loss.tau: " + unset + " 0.2"),
            ("seed: 0\n", [], "line 1: invalid value 0 for seed: " + unset + " 1"),
            ("model { norm: NORM_UNSPECIFIED }\n", [], "line 1: invalid value NORM_UNSPECIFIED for model.norm"),
            ("\nepochs: -2\n", [], "line 2: epochs must be >= 1, got -2"),
            ("eval {\n  knn_k: -1\n}\n", [], "line 2: eval.knn_k must be >= 1, got -1"),
            ("batch_size: 32\n", ["--batch_size", "-4"], "error: --batch_size: batch_size must be >= 2"),
        ]
        configs = [self.write("zero%d.pbtxt" % i, text) for i, (text, _, _) in enumerate(cases)]
        outs = [self.path("out%d" % i) for i in range(len(cases))]
        procs = run_all([lambda config=config, flags=flags, out=out:
                         run_train(2, TINY + flags + ["--config", config, "--out_dir", out], timeout=120)
                         for config, (_, flags, _), out in zip(configs, cases, outs)])
        for config, (text, flags, expected), out, proc in zip(configs, cases, outs, procs):
            with self.subTest(config=text, flags=flags):
                self.assert_clean_failure(proc, expected)
                if not flags:
                    self.assertIn("tempered-train: error: " + config + " line ", proc.stderr)
                self.assertFalse(os.path.exists(out), "a rejected config created its out_dir")
        # Fields left out, and explicit zeros where zero is the default or the field has presence, are fine.
        config = self.write("ok.pbtxt", "loss { tau: 0.3 }\noptim { warmup_epochs: 0 momentum: 0 }\nmax_steps: 1\n")
        proc = run_train(2, TINY + ["--config", config, "--out_dir", self.path("ok")], timeout=120)
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        resolved = read_result(self.path("ok"))["config"]
        self.assertEqual(resolved["batch_size"], 64)  # TINY's flag
        self.assertEqual(resolved["optim"]["momentum"], 0)
        self.assertEqual(resolved["epochs"], 1)  # the default

    def test_sizes_that_do_not_fit_the_data(self):
        cases = [
            (2, ["--train_subset", "100", "--batch_size", "256"], "batch_size 256 is larger than the 100 training"),
            (2, ["--test_subset", "20000"], "data.test_subset must lie in [0, 10000]"),
            (2, ["--train_subset", "70000"], "data.train_subset must lie in [0, 60000]"),
            (3, ["--batch_size", "2"], "batch_size 2 is smaller than the 3 ranks"),
        ]
        procs = run_all([lambda np_=np_, flags=flags, i=i: run_train(np_, TINY + flags + ["--out_dir",
                                                                                       self.path("out%d" % i)],
                                                                      timeout=120)
                         for i, (np_, flags, _) in enumerate(cases)])
        for (np_, flags, expected), proc in zip(cases, procs):
            with self.subTest(flags=flags):
                self.assert_clean_failure(proc, expected)


class MalformedConfigTest(FaultTest):
    def test_malformed_text_protos_name_the_file_and_line(self):
        cases = [
            ("unclosed", "loss { tau: 0.1\n", "line 2"),
            ("string_for_float", "epochs: 1\nloss { tau: \"abc\" }\n", "line 2"),
            ("unknown_enum", "model { norm: FANCY }\n", 'Unknown enumeration value of "FANCY" for field "norm"'),
            ("repeated_scalar", "epochs: 1\nepochs: 2\n", "line 2"),
            ("int_overflow", "batch_size: 99999999999\n", "line 1"),
            ("unknown_nested_field", "loss { temperature: 0.5 }\n", "temperature"),
            ("negative_unsigned", "seed: -3\n", "line 1"),
        ]
        configs = [self.write(name + ".pbtxt", text) for name, text, _ in cases]
        procs = run_all([lambda config=config: run_train(2, ["--config", config, "--out_dir", self.path("out")],
                                                         timeout=120)
                         for config in configs])
        for (name, _, where), config, proc in zip(cases, configs, procs):
            with self.subTest(case=name):
                self.assert_clean_failure(proc, "cannot parse " + config + " as a RunConfig", where)

    def test_a_binary_file_as_config(self):
        config = os.path.join(FASHION_MNIST, "t10k-labels-idx1-ubyte.gz")
        proc = run_train(2, ["--config", config, "--out_dir", self.path("out")], timeout=60)
        self.assert_clean_failure(proc, "cannot parse " + config)

    def test_a_missing_config_or_a_directory(self):
        missing = self.path("no-such.pbtxt")
        proc = run_train(2, ["--config", missing, "--out_dir", self.path("out")], timeout=60)
        self.assert_clean_failure(proc, "cannot read config file " + missing, "No such file or directory")
        proc = run_train(2, ["--config", self.tmp, "--out_dir", self.path("out")], timeout=60)
        self.assert_clean_failure(proc, "cannot read config file " + self.tmp)


class SweepSpecTest(FaultTest):
    """tempered-sweep rejects a bad spec before anything runs: exit 2, one line, no sweep directory."""

    def run_sweep(self, spec_text, sweep_dir):
        spec = self.write("spec.pbtxt", spec_text)
        proc = subprocess.run([SWEEP, "--spec", spec, "--out_dir", sweep_dir], capture_output=True, text=True,
                              start_new_session=True, timeout=60)
        return spec, proc

    def test_bad_specs(self):
        cases = [
            ("no_such_field: 1\n", ["line 1", "no_such_field"]),
            ("tau: [0.1]\nbase {\n  loss { temperature: 0.5 }\n}\n", ["line 3", "temperature"]),
            ("tau: [0.1, 0.2\n", ["line 2"]),
            ('axis { field: "loss.temperature" values: ["0.5"] }\n', ["unknown config field 'loss.temperature'"]),
            ('axis { field: "optim.lr" values: ["fast"] }\n', ["invalid value 'fast' for optim.lr"]),
            ('axis { field: "batch_size" values: ["64", "-2"] }\n', ["batch_size=-2", "batch_size must be >= 2"]),
            ('axis { field: "batch_size" values: ["64", "0"] }\n', ["batch_size=0", "it reads as unset"]),
            ("seed: [0, 1]\n", ["seed=0", "it reads as unset"]),
            ('axis { field: "epochs" values: [] }\n', ["axis 'epochs' has no values"]),
            ("ranks_per_run: -1\n", ["ranks_per_run must be >= 1, got -1"]),
            ("max_attempts: -2\n", ["max_attempts must be >= 1"]),
            ("base { out_dir: \"x\" }\n", ["base.out_dir is set by the sweep"]),
        ]
        for i, (text, expected) in enumerate(cases):
            with self.subTest(spec=text):
                sweep_dir = self.path("sweep%d" % i)
                spec, proc = self.run_sweep(text, sweep_dir)
                self.assertEqual(proc.returncode, 2, proc.stdout + proc.stderr)
                for phrase in expected:
                    self.assertIn(phrase, proc.stderr)
                if "line" in expected[0]:
                    self.assertIn(spec, proc.stderr)
                self.assertEqual(proc.stderr.count("\n"), 1, proc.stderr)  # one sentence
                self.assertFalse(os.path.exists(sweep_dir))


class DataDirTest(FaultTest):
    """Damage in a real run's data directory (the unit tests cover the readers on small files)."""

    def data_dir(self, replace):
        """A copy of Fashion-MNIST (symlinks) with the files in `replace` (name -> bytes before gzip) rewritten."""
        data = self.path("data")
        os.makedirs(data, exist_ok=True)
        for name in os.listdir(FASHION_MNIST):
            target = os.path.join(data, name)
            if os.path.lexists(target):
                os.remove(target)
            if name in replace:
                with gzip.open(target, "wb") as f:
                    f.write(replace[name])
            else:
                os.symlink(os.path.join(FASHION_MNIST, name), target)
        return data

    @staticmethod
    def original(name):
        with gzip.open(os.path.join(FASHION_MNIST, name), "rb") as f:
            return bytearray(f.read())

    def test_label_out_of_range(self):
        labels = self.original("train-labels-idx1-ubyte.gz")
        labels[8 + 123] = 10  # the header is 8 bytes; the 124th label becomes 10 in a 10-class set
        data = self.data_dir({"train-labels-idx1-ubyte.gz": bytes(labels)})
        proc = run_train(2, TINY + ["--data_dir", data, "--out_dir", self.path("out")], timeout=120)
        self.assert_clean_failure(proc, os.path.join(data, "train-labels-idx1-ubyte.gz"),
                                  "has label 10 at index 123, expected labels in [0, 10)")

    def test_wrong_magic_and_mismatched_counts(self):
        labels = self.original("t10k-labels-idx1-ubyte.gz")
        cases = [
            ({"t10k-images-idx3-ubyte.gz": bytes(labels)}, "t10k-images-idx3-ubyte.gz",
             "has magic number 0x00000801, expected 0x00000803"),
            ({"t10k-labels-idx1-ubyte.gz": bytes(labels[:4]) + (9999).to_bytes(4, "big") + bytes(labels[8:-1])},
             "t10k-labels-idx1-ubyte.gz", "has 9999 labels but"),
        ]
        for replace, name, expected in cases:
            with self.subTest(file=name, expected=expected):
                data = self.data_dir(replace)
                proc = run_train(2, TINY + ["--data_dir", data, "--out_dir", self.path("out")], timeout=120)
                self.assert_clean_failure(proc, os.path.join(data, name), expected)


@unittest.skipUnless(MOUNT_OK, "needs root and permission to mount a tmpfs")
class OutputDirTest(FaultTest):
    def test_read_only_out_dir(self):
        # As root, chmod 555 does not stop anything: a read-only mount does.
        read_only = self.mount_tmpfs("ro", "ro,size=64k")
        proc = run_train(2, TINY + ["--max_steps", "2", "--out_dir", read_only], timeout=120)
        self.assert_clean_failure(proc, read_only + "/", "Read-only file system")
        proc = run_train(2, TINY + ["--max_steps", "2", "--out_dir", os.path.join(read_only, "run")], timeout=120)
        self.assert_clean_failure(proc, "cannot create output directory " + os.path.join(read_only, "run"),
                                  "Read-only file system")

    def test_unwritable_progress_json_does_not_end_the_run(self):
        # progress.json is best-effort (for a person or a script watching): a failed write of it, here a directory
        # where the file goes (as ENOSPC or EIO would), is one warning, and the run goes on to its result.
        out = self.path("out")
        os.makedirs(os.path.join(out, "progress.json"))
        proc = run_train(2, TINY + ["--max_steps", "4", "--out_dir", out], timeout=120)
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        self.assertEqual(read_result(out)["status"], "FINISHED")
        warnings = [line for line in proc.stderr.splitlines() if "progress.json" in line]
        self.assertEqual(len(warnings), 1, proc.stderr[-3000:])  # --log_every_steps 1: four failed writes

    def test_a_second_writer_of_one_out_dir_is_refused(self):
        # Two trainers on one out_dir (a run started twice, or by a coordinator killed before it recorded the first)
        # would mix their checkpoints and results: the second is refused before it writes anything.
        out = self.path("out")
        first = start_train(2, TINY + ["--epochs", "300", "--checkpoint_every_steps", "5", "--out_dir", out])
        try:
            wait_for_step(out, 3, first)
            second = run_train(2, TINY + ["--max_steps", "2", "--out_dir", out, "--resume"], timeout=120)
            self.assert_clean_failure(second, "another tempered-train writing to %s holds %s/.lock; " % (out, out))
            self.assertIsNone(first.poll(), "the first writer ended")
        finally:
            first.send_signal(signal.SIGTERM)  # mpirun forwards it: the first run checkpoints and stops
            _, stderr = first.communicate(timeout=120)
        self.assertIn(first.returncode, (1, 128 + signal.SIGTERM), stderr[-3000:])  # mpirun may say 1 for 143
        result = read_result(out)
        self.assertEqual(result["status"], "INTERRUPTED")
        steps = [int(s["step"]) for s in result["step_loss"]]
        self.assertEqual(steps, list(range(1, len(steps) + 1)))  # one writer's steps, none twice

    def test_full_disk_keeps_the_last_checkpoint_and_result(self):
        disk = self.mount_tmpfs("disk", "size=256k")
        out = os.path.join(disk, "run")
        config = self.write("small.pbtxt", SMALL_MODEL_CONFIG)
        run = TINY + ["--config", config, "--out_dir", out, "--checkpoint_every_steps", "2", "--max_steps", "4"]
        proc = run_train(2, run, timeout=120)
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        before = {}
        for name in ("result.json", "checkpoint.pt"):
            with open(os.path.join(out, name), "rb") as f:
                before[name] = f.read()
        self.assertEqual(json.loads(before["result.json"])["status"], "FINISHED")

        # Fill the disk to the last byte, then resume the run (a --resume of a finished run evaluates and writes its
        # results again): the first write must fail cleanly.
        filler = os.open(os.path.join(disk, "filler"), os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            while os.write(filler, b"\0" * 4096) > 0:
                pass
        except OSError:
            pass  # ENOSPC: full
        finally:
            os.close(filler)
        proc = run_train(2, run + ["--resume"], timeout=120)
        self.assert_clean_failure(proc, "No space left on device")
        written = re.search(r"cannot write (?:the event file )?(\S+): No space left on device", proc.stderr)
        self.assertIsNotNone(written, proc.stderr[-3000:])
        self.assertTrue(written.group(1).startswith(out + "/"), written.group(1))
        for name, data in before.items():
            with open(os.path.join(out, name), "rb") as f:
                self.assertEqual(f.read(), data, name + " was damaged")
        self.assertEqual([n for n in os.listdir(out) if ".tmp." in n], [], "temporary files left behind")

        # With space again, the kept checkpoint resumes the run to its end.
        os.remove(os.path.join(disk, "filler"))
        proc = run_train(2, run + ["--resume"], timeout=120)
        self.assert_resumed_to_the_end(proc, out, 4)


class NonFiniteLossTest(FaultTest):
    def test_nan_loss_stops_every_rank_with_the_step(self):
        # A learning rate of 1e30 throws the weights to inf after the first step; the next loss is NaN.
        out = self.path("out")
        start = time.monotonic()
        # A tiny tau is printed as such, not as 0.000000.
        proc = run_train(2, TINY + ["--lr", "1e30", "--tau", "1e-7", "--max_steps", "20",
                                    "--checkpoint_every_steps", "1", "--out_dir", out], timeout=120)
        self.assertLess(time.monotonic() - start, 100)
        self.assert_clean_failure(proc, "the loss became")
        found = re.search(r"the loss became (?:NaN|infinite) at global step (\d+) "
                          r"\(epoch 1, lr [0-9.]+e\+[23][0-9], tau 1e-07\)", proc.stderr)
        self.assertIsNotNone(found, proc.stderr[-3000:])
        step = int(found.group(1))
        self.assertGreaterEqual(step, 2)
        # What was written before the failure is whole: the result (with the finite losses) and the checkpoint;
        # the result says the run failed, and why.
        result = read_result(out)
        self.assertEqual(len(result["step_loss"]), step - 1)
        self.assertEqual(result["status"], "FAILED")
        self.assertEqual(result["error"], found.group(0))
        self.assertTrue(zipfile.is_zipfile(os.path.join(out, "checkpoint.pt")))

    def test_nan_loss_found_at_a_later_host_sync_names_its_own_step(self):
        # As on a GPU: the host reads the losses every 4 steps (and logs and checkpoints only there), so the NaN of
        # step 2 or 3 is found at step 4, named by its own step, and no checkpoint of the diverged weights is written.
        out = self.path("out")
        proc = run_train(2, TINY + ["--lr", "1e30", "--max_steps", "20", "--log_every_steps", "4",
                                    "--checkpoint_every_steps", "4", "--host_sync_every_steps", "4",
                                    "--out_dir", out], timeout=120)
        self.assert_clean_failure(proc, "the loss became")
        found = re.search(r"the loss became (?:NaN|infinite) at global step (\d+) \(epoch 1, lr [^)]*, tau [^)]*\)",
                          proc.stderr)
        self.assertIsNotNone(found, proc.stderr[-3000:])
        step = int(found.group(1))
        self.assertIn(step, (2, 3, 4))
        # The result is the last one written (before the first checkpoint: no steps) with the failure.
        result = read_result(out)
        self.assertEqual(result.get("step_loss", []), [])
        self.assertEqual(result["status"], "FAILED")
        self.assertEqual(result["error"], found.group(0))
        self.assertFalse(os.path.exists(os.path.join(out, "checkpoint.pt")))


class RankFailureTest(FaultTest):
    def wrapper(self, rank_args):
        """A script that mpirun starts instead of tempered-train: rank r gets the extra arguments rank_args[r]."""
        path = self.path("rank-wrapper")
        with open(path, "w") as f:
            f.write("#!/usr/bin/python3\nimport os, sys\nEXTRA = %r\n"
                    "rank = os.environ.get('OMPI_COMM_WORLD_RANK', '0')\n"
                    "os.execv(%r, [%r] + sys.argv[1:] + EXTRA.get(rank, []))\n" % (rank_args, TRAIN, TRAIN))
        os.chmod(path, 0o755)
        return path

    def run_wrapped(self, wrapper, args, timeout=120):
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
        return subprocess.run([MPIRUN, *MPI_ARGS, "-np", "2", wrapper, "--threads", "1", *args],
                              capture_output=True, text=True, timeout=timeout, env=env)

    def signal_a_rank(self, rank, sig, flags):
        """Starts a 2-rank training run with `flags`, sends `sig` to rank `rank` after step 3, and checks that the
        job ends non-zero within 30 s with its checkpoint readable. Returns (out_dir, the job's stderr)."""
        out = self.path("out")
        proc = start_train(2, TINY + flags + ["--checkpoint_every_steps", "2", "--out_dir", out])
        try:
            wait_for_step(out, 3, proc)
            ranks = rank_pids(out)
            self.assertEqual(sorted(ranks), [0, 1], ranks)
            os.kill(ranks[rank], sig)
            signalled = time.monotonic()
            _, stderr = proc.communicate(timeout=60)
            ended = time.monotonic() - signalled
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.assertNotEqual(proc.returncode, 0)
        self.assertLess(ended, 30, "the job took %.0f s to end after rank %d got signal %d" % (ended, rank, sig))
        self.assertTrue(zipfile.is_zipfile(os.path.join(out, "checkpoint.pt")))
        return out, stderr

    def test_killed_rank_ends_the_job(self):
        out, stderr = self.signal_a_rank(1, signal.SIGKILL, ["--max_steps", "400"])
        self.assertIn("exited on signal 9", stderr)
        # The files rank 0 wrote stay whole: a parseable result (the checkpoint is checked above). Rank 0 outlives
        # rank 1 by mpirun's SIGTERM-to-SIGKILL second, in which it records the failure.
        result = read_result(out)
        self.assertEqual(result["status"], "FAILED", stderr[-3000:])
        self.assertIn("rank 0 was told to stop (SIGTERM or SIGINT)", result["error"])
        self.assertIn("another rank died or the job was cancelled", result["error"])

    def stall_a_rank(self, stalled):
        """SIGSTOPs rank `stalled` of a training run (a rank that hangs, or a node gone silent); returns the run's
        result.json and the job's stderr."""
        out, stderr = self.signal_a_rank(stalled, signal.SIGSTOP,
                                         ["--epochs", "100", "--collective_timeout_seconds", "3"])
        self.assertEqual([n for n in os.listdir(out) if ".tmp." in n], [], "temporary files left behind")
        return read_result(out), stderr

    def test_stalled_rank_ends_the_job(self):
        # The other rank's collective watchdog gives up after --collective_timeout_seconds and takes the job down.
        result, stderr = self.stall_a_rank(1)
        sentence = re.search(r"rank 0 waited 3 s in [a-z -]+ for the other ranks; a rank stalled or died", stderr)
        self.assertIsNotNone(sentence, stderr[-3000:])
        errors = error_lines(stderr)
        self.assertEqual(len(errors), 1, stderr[-3000:])
        self.assertTrue(errors[0].startswith("tempered-train: error: " + sentence.group(0)), errors[0])
        self.assertEqual(result["status"], "FAILED")
        self.assertEqual(result["error"], sentence.group(0))

    def test_stalled_rank_zero_ends_the_job(self):
        # Rank 1's watchdog ends the job. mpirun then continues rank 0 and sends it SIGTERM, and SIGKILL after a
        # second, or at once: its sleep between the two ends early when rank 1 exits (Open MPI 4.1), so rank 0 may
        # get no time to record the failure. It never says more than the truth.
        result, stderr = self.stall_a_rank(0)
        self.assertRegex(stderr, r"tempered-train: error: rank 1 waited 3 s in [a-z -]+ for the other ranks; "
                                 r"a rank stalled or died")
        self.assertEqual(len(error_lines(stderr)), 1, stderr[-3000:])
        self.assertIn(result["status"], ("RUNNING", "FAILED"))
        if result["status"] == "FAILED":
            self.assertIn("rank 0 was told to stop (SIGTERM or SIGINT)", result["error"])

    def test_waiting_for_rank_zero_to_evaluate_is_not_a_stall(self):
        # Rank 0 alone computes the kNN, the representation metrics (4000 test images, two views each) and the
        # raw-pixel kNN for several seconds while rank 1 waits: a legitimate wait that a 3 s watchdog must not end.
        out = self.path("out")
        config = self.write("metrics.pbtxt", "eval { metric_samples: 4000 }\n")
        proc = run_train(2, TINY + ["--config", config, "--train_subset", "16384", "--test_subset", "4000",
                                    "--max_steps", "1", "--eval_at_init", "--raw_pixel_knn",
                                    "--collective_timeout_seconds", "3", "--out_dir", out], timeout=180)
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        self.assertEqual(read_result(out)["status"], "FINISHED")

    def test_waiting_for_rank_zero_to_evaluate_is_bounded(self):
        # The same several-second evaluation with --eval_timeout_seconds 1: rank 1 gives up waiting and ends the
        # job in one sentence that names the wait and the setting (it once waited without bound).
        out = self.path("out")
        config = self.write("metrics.pbtxt", "eval { metric_samples: 4000 }\n")
        start = time.monotonic()
        proc = run_train(2, TINY + ["--config", config, "--train_subset", "16384", "--test_subset", "4000",
                                    "--max_steps", "1", "--eval_at_init", "--raw_pixel_knn",
                                    "--eval_timeout_seconds", "1", "--out_dir", out], timeout=180)
        self.assertNotEqual(proc.returncode, 0)
        self.assertLess(time.monotonic() - start, 120)
        errors = error_lines(proc.stderr)
        self.assertEqual(len(errors), 1, proc.stderr[-3000:])
        self.assertRegex(errors[0], r"^tempered-train: error: rank 1 waited 1 s in barrier for rank 0's evaluation; "
                                    r"rank 0 stalled or died, or its evaluation needs a longer eval_timeout_seconds")

    def test_a_rank_failing_alone_in_setup_ends_the_job(self):
        # Only rank 1 is given a data directory that does not exist (as on a node without the data set).
        missing = self.path("no-data-on-this-node")
        wrapper = self.wrapper({"1": ["--data_dir", missing]})
        start = time.monotonic()
        proc = self.run_wrapped(wrapper, TINY + ["--max_steps", "3", "--out_dir", self.path("out")])
        self.assertLess(time.monotonic() - start, 100)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn(missing, proc.stderr)

    def test_a_config_missing_on_one_rank_is_reported(self):
        # As when a config file is on one node's disk but not the other's: rank 1 alone cannot read it.
        config = self.write("run.pbtxt", "loss { tau: 0.3 }\n")
        missing = self.path("not-on-this-node.pbtxt")
        wrapper = self.wrapper({"1": ["--config", missing]})
        start = time.monotonic()
        proc = self.run_wrapped(wrapper, TINY + ["--config", config, "--max_steps", "3",
                                                 "--out_dir", self.path("out")])
        self.assertLess(time.monotonic() - start, 100)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn(missing, proc.stderr)

    def test_rank_zero_decides_whether_to_resume(self):
        # Rank 1 alone is told not to resume (as a rank that looked before a lagging shared file system showed the
        # checkpoint would decide): rank 0's decision holds, so both ranks resume and enter the same collectives.
        # (A --resume of a finished run loads its last checkpoint, evaluates and writes its results again.)
        out = self.path("out")
        proc = run_train(2, TINY + ["--max_steps", "4", "--out_dir", out], timeout=120)
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        wrapper = self.wrapper({"1": ["--resume=false"]})
        proc = self.run_wrapped(wrapper, TINY + ["--max_steps", "4", "--out_dir", out, "--resume",
                                                 "--collective_timeout_seconds", "20"])
        self.assert_resumed_to_the_end(proc, out, 4)

    def test_a_checkpoint_another_rank_cannot_read_is_reported(self):
        # As when out_dir is not on a file system every rank shares: rank 1 is given a directory of its own (its
        # node's disk), where rank 0's checkpoint is not. Every rank exits non-zero, with one sentence naming it.
        out, elsewhere = self.path("out"), self.path("rank-1-disk")
        proc = run_train(1, TINY + ["--max_steps", "4", "--out_dir", out], timeout=120)
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        wrapper = self.wrapper({"1": ["--out_dir", elsewhere]})
        start = time.monotonic()
        proc = self.run_wrapped(wrapper, TINY + ["--max_steps", "4", "--out_dir", out, "--resume",
                                                 "--collective_timeout_seconds", "10"])
        self.assertLess(time.monotonic() - start, 100)
        self.assert_clean_failure(proc, "rank 1 cannot read the checkpoint %s/checkpoint.pt that rank 0 resumes from"
                                  % elsewhere)

    def test_corrupt_checkpoint_on_resume(self):
        out = self.path("out")
        proc = run_train(1, TINY + ["--max_steps", "2", "--out_dir", out])
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        checkpoint = os.path.join(out, "checkpoint.pt")
        with open(checkpoint, "r+b") as f:
            f.truncate(os.path.getsize(checkpoint) // 2)
        proc = run_train(2, TINY + ["--max_steps", "4", "--out_dir", out, "--resume"], timeout=120)
        self.assert_clean_failure(proc, "cannot read checkpoint " + checkpoint)


if __name__ == "__main__":
    unittest.main()
