"""Shared helpers of the Python end-to-end tests: where the binaries are, how to launch them under mpirun."""
import json
import os
import shutil
import subprocess
import tempfile

BIN = os.environ.get("TEMPERED_BIN", os.path.join(os.path.dirname(__file__), "..", "build"))
SOURCE = os.environ.get("TEMPERED_SOURCE", os.path.join(os.path.dirname(__file__), ".."))
TRAIN = os.path.join(BIN, "trainer", "tempered-train")
MPIRUN = os.environ.get("TEMPERED_MPIRUN") or shutil.which("mpirun") or "mpirun"
FASHION_MNIST = "/usr/share/datasets/fashion-mnist"

# mpirun as root refuses to run and still exits 0 (docs/cpu.md); oversubscribe: tests use up to 4 ranks on 2 cores.
MPI_ARGS = ["--allow-run-as-root", "--oversubscribe"]


def run_train(np_, args, timeout=300):
    """Runs tempered-train under mpirun with np_ ranks (one thread each); returns the CompletedProcess."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    cmd = [MPIRUN, *MPI_ARGS, "-np", str(np_), TRAIN, "--threads", "1", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def read_result(out_dir):
    with open(os.path.join(out_dir, "result.json")) as f:
        return json.load(f)


class TempDir:
    def __enter__(self):
        self.path = tempfile.mkdtemp(prefix="tempered-test-")
        return self.path

    def __exit__(self, *exc):
        shutil.rmtree(self.path, ignore_errors=True)
