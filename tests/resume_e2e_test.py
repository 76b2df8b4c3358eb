"""Exact resume: a run stopped by SIGTERM (or killed) and resumed gives the same step losses, final parameters and
metrics as an uninterrupted run at the same world size."""
import json
import os
import signal
import subprocess
import time
import unittest

from tempered_testing import MPI_ARGS, MPIRUN, TRAIN, TempDir, read_result, run_train
from train_e2e_test import load_params

RUN = ["--train_subset", "2560", "--test_subset", "256", "--linear_epochs", "0", "--batch_size", "64",
       "--max_steps", "40", "--log_every_steps", "1", "--checkpoint_every_steps", "5", "--seed", "3",
       "--norm", "batch"]


def start_train(np_, args):
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    return subprocess.Popen([MPIRUN, *MPI_ARGS, "-np", str(np_), TRAIN, "--threads", "1", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)


def wait_for_step(out_dir, step, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with open(os.path.join(out_dir, "progress.json")) as f:
                if json.load(f)["step"] >= step:
                    return
        except (OSError, ValueError):
            pass
        if proc.poll() is not None:
            raise AssertionError("the run ended before step %d: %s" % (step, proc.stderr.read()[-2000:]))
        time.sleep(0.05)
    raise AssertionError("step %d not reached in %d s" % (step, timeout))


def wait_for_text(path, text, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with open(path) as f:
            if text in f.read():
                return
        if proc.poll() is not None:
            raise AssertionError("the run ended before it logged %r" % text)
        time.sleep(0.05)
    raise AssertionError("%r not logged in %d s" % (text, timeout))


def write_slow_folder(root, links=12000):
    """An image folder whose decoding takes many minutes on one thread: one 2400 x 1800 JPEG of noise (3.9 MB; 65 ms
    to decode at 1/8 scale with PIL's draft mode on a loaded 2-core machine: the entropy decoding is the cost at
    any scale), hard-linked `links` times into each of two classes of train/ and a few times into test/."""
    import numpy as np
    from PIL import Image  # Debian's python3-pil
    original = os.path.join(root, "original.jpg")
    os.makedirs(root)
    pixels = np.random.default_rng(5).integers(0, 256, (1800, 2400, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(original, quality=90)
    for split, count in (("train", links), ("test", 4)):
        for label in ("a", "b"):
            folder = os.path.join(root, split, label)
            os.makedirs(folder)
            for i in range(count):
                os.link(original, os.path.join(folder, f"{i:05d}.jpg"))


class ResumeTest(unittest.TestCase):
    def assert_same_run(self, reference_dir, resumed_dir):
        ref, res = read_result(reference_dir), read_result(resumed_dir)
        self.assertEqual(res["status"], "FINISHED")
        self.assertEqual([int(s["step"]) for s in res["step_loss"]], list(range(1, 41)))  # int64 is a JSON string
        for a, b in zip(ref["step_loss"], res["step_loss"]):
            self.assertAlmostEqual(a["loss"], b["loss"], delta=1e-5 * abs(a["loss"]), msg=f"step {a['step']}")
        ref_params, res_params = load_params(reference_dir), load_params(resumed_dir)
        for name, p in ref_params.items():
            rel = (p - res_params[name]).norm().item() / max(p.norm().item(), 1e-12)
            self.assertLessEqual(rel, 1e-5, name)
        # With --norm batch every rank has its own running statistics; the evaluated model must be the same one on
        # every rank (and so in the checkpoint), or a resumed run evaluates differently: to the bit on the CPU.
        self.assertEqual(res["final"], ref["final"])
        self.assertEqual([e["metrics"] for e in res["epochs"]], [e["metrics"] for e in ref["epochs"]])

    def test_sigterm_then_resume(self):
        with TempDir() as tmp:
            reference, resumed = os.path.join(tmp, "reference"), os.path.join(tmp, "resumed")
            proc = run_train(2, RUN + ["--out_dir", reference])
            self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])

            proc = start_train(2, RUN + ["--out_dir", resumed])
            wait_for_step(resumed, 7, proc)
            os.killpg(proc.pid, signal.SIGTERM)  # as Slurm does at preemption: every process gets it
            proc.wait(timeout=60)
            interrupted = read_result(resumed)
            self.assertEqual(interrupted["status"], "INTERRUPTED", proc.stderr.read()[-2000:])
            self.assertLess(int(interrupted["global_steps"]), 40)

            proc = run_train(2, RUN + ["--out_dir", resumed, "--resume"])
            self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
            self.assertIn("resumed from", proc.stderr)
            self.assert_same_run(reference, resumed)

    def test_stop_signal_during_setup(self):
        """A stop while an image folder is decoded (minutes at ImageNet's size) ends the run within seconds on every
        rank, INTERRUPTED in result.json, as a stop during training does: the sweep then resumes it without spending
        an attempt, and Slurm's grace period before SIGKILL is not spent decoding."""
        with TempDir() as tmp:
            data, out = os.path.join(tmp, "data"), os.path.join(tmp, "out")
            write_slow_folder(data)
            log_path = os.path.join(tmp, "log.txt")
            with open(log_path, "w") as log:
                env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
                proc = subprocess.Popen([MPIRUN, *MPI_ARGS, "-np", "2", TRAIN, "--threads", "1", "--dataset",
                                         "imagefolder", "--data_dir", data, "--storage", "memory", "--image_size",
                                         "32", "--linear_epochs", "0", "--out_dir", out], stdout=log, stderr=log,
                                        env=env, start_new_session=True)
            # The config is logged after the signal handlers are installed, before the data is listed.
            wait_for_text(log_path, "resolved config", proc)
            time.sleep(1)  # into the decoding, which takes over a minute undisturbed (write_slow_folder)
            signalled = time.time()
            proc.send_signal(signal.SIGUSR1)  # what the sweep and the Slurm job script send: mpirun forwards it
            returncode = proc.wait(timeout=120)
            with open(log_path) as f:
                text = f.read()
            self.assertLess(time.time() - signalled, 20, text[-2000:])
            self.assertIn(returncode, (1, 128 + signal.SIGTERM), text[-2000:])  # mpirun may say 1 for 143
            self.assertRegex(text, r"stopped by a signal while (listing|decoding) .*; the run ends INTERRUPTED")
            result = read_result(out)
            self.assertEqual(result["status"], "INTERRUPTED")
            self.assertEqual(int(result.get("global_steps", 0)), 0)
            self.assertEqual(result["config"]["data"]["data_dir"], data)

    def test_sigkill_then_resume_from_last_checkpoint(self):
        with TempDir() as tmp:
            reference, resumed = os.path.join(tmp, "reference"), os.path.join(tmp, "resumed")
            proc = run_train(1, RUN + ["--out_dir", reference])
            self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
            proc = start_train(1, RUN + ["--out_dir", resumed])
            wait_for_step(resumed, 12, proc)
            os.killpg(proc.pid, signal.SIGKILL)  # no chance to write anything: the periodic checkpoint must do
            proc.wait(timeout=60)
            proc = run_train(1, RUN + ["--out_dir", resumed, "--resume"])
            self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
            self.assert_same_run(reference, resumed)

    def test_resume_with_a_different_config_is_refused(self):
        with TempDir() as tmp:
            out = os.path.join(tmp, "run")
            proc = run_train(1, RUN + ["--out_dir", out, "--max_steps", "5"])
            self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
            proc = run_train(1, RUN + ["--out_dir", out, "--max_steps", "5", "--resume", "--tau", "0.5"])
            self.assertNotEqual(proc.returncode, 0)
            self.assertIn("cannot resume from", proc.stderr)
            self.assertIn("tau", proc.stderr)
            # Changing only what does not affect the computation is fine.
            proc = run_train(1, RUN + ["--out_dir", out, "--max_steps", "5", "--resume", "--log_every_steps", "3",
                                       "--gradient_bucket_kib", "64", "--collective_timeout_seconds", "60"])
            self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])


if __name__ == "__main__":
    unittest.main()
