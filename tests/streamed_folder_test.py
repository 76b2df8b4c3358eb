"""Image folders streamed per rank (data.storage STREAM) under mpirun: the same losses at 1, 2 and 3 ranks with
uneven shards, a file that turns bad mid-run ending every rank with one sentence (or replaced and counted with
data.skip_bad_images), file names that are not UTF-8, and threads per rank taken from the CPU affinity mask (taskset)."""
import os
import shutil
import subprocess
import unittest

import numpy as np
from PIL import Image

from tempered_testing import MPI_ARGS, MPIRUN, TRAIN, TempDir, read_result, run_train


def write_folder(root, per_class=24, classes=3, size=(40, 30)):
    """root/train/c<k>/<i>.jpg and root/val/..., smooth random colour fields, as photographs compress."""
    rng = np.random.default_rng(5)
    for split, count in (("train", per_class), ("val", 4)):
        for c in range(classes):
            folder = os.path.join(root, split, f"c{c}")
            os.makedirs(folder, exist_ok=True)
            for i in range(count):
                small = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
                Image.fromarray(small).resize(size, Image.BILINEAR).save(os.path.join(folder, f"{i:03d}.jpg"))


def streamed_args(root, out_dir, *extra):
    return ["--dataset", "imagefolder", "--data_dir", root, "--storage", "stream", "--image_size", "24",
            "--model", "small_cnn", "--norm", "none", "--batch_size", "33", "--epochs", "1", "--lr", "0.05",
            "--curve_train_samples", "0", "--linear_epochs", "0", "--log_every_steps", "1",
            "--out_dir", out_dir, *extra]


class StreamedFolderTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.temp = TempDir()
        cls.root = cls.temp.__enter__()
        cls.data = os.path.join(cls.root, "data")
        write_folder(cls.data)

    @classmethod
    def tearDownClass(cls):
        cls.temp.__exit__(None, None, None)

    def test_world_size_invariance_with_uneven_shards(self):
        losses = {}
        for np_ in (1, 2, 3):  # 33 images a step: 33, 17 + 16, 11 x 3
            out = os.path.join(self.root, f"ws{np_}")
            proc = run_train(np_, streamed_args(self.data, out))
            self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
            result = read_result(out)
            self.assertEqual(result["status"], "FINISHED")
            losses[np_] = [s["loss"] for s in result["step_loss"]]
        self.assertEqual(len(losses[1]), 2)  # 72 images: two full global batches
        for np_ in (2, 3):
            np.testing.assert_allclose(losses[np_], losses[1], rtol=1e-5, err_msg=f"{np_} ranks")

    def bad_copy(self, name):
        """A copy of the folder whose c1/005.jpg is cut short (it is read when a step first draws it)."""
        data = os.path.join(self.root, name)
        shutil.copytree(self.data, data)
        path = os.path.join(data, "train", "c1", "005.jpg")
        with open(path, "rb") as f:
            jpeg = f.read()
        with open(path, "wb") as f:
            f.write(jpeg[: len(jpeg) // 2])
        return data, path

    def test_a_bad_file_ends_every_rank_with_one_sentence(self):
        data, bad = self.bad_copy("bad")
        out = os.path.join(self.root, "bad-run")
        proc = run_train(2, streamed_args(data, out, "--checkpoint_every_steps", "1", "--epochs", "3"))
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn(f"{bad} is truncated", proc.stderr)
        self.assertIn("read for global step", proc.stderr)
        self.assertEqual(proc.stderr.count(f"{bad} is truncated"), 1, "one rank reports it")
        result = read_result(out)
        self.assertEqual(result["status"], "FAILED")
        self.assertIn(bad, result["error"])

    def test_skip_bad_images_replaces_and_counts(self):
        data, _ = self.bad_copy("skip")
        out = os.path.join(self.root, "skip-run")
        config = os.path.join(self.root, "skip.pbtxt")
        with open(config, "w") as f:
            f.write("data { skip_bad_images: true }\n")
        proc = run_train(2, ["--config", config] + streamed_args(data, out + "2", "--epochs", "3"))
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        result = read_result(out + "2")
        self.assertEqual(result["status"], "FINISHED")
        self.assertGreaterEqual(int(result["bad_images"]), 1)
        self.assertIn("Replaced by a grey image", proc.stderr)

    def test_file_names_that_are_not_utf8(self):
        """File names are bytes on Linux: one named in Latin-1 trains like any other, and when it is bad the sentence
        and result.json show its name with the byte that is not UTF-8 written as \\xE9 (common/utf8.h)."""
        data = os.path.join(self.root, "latin1")
        shutil.copytree(self.data, data)
        folder = os.fsencode(os.path.join(data, "train", "c1"))
        latin1 = folder + b"/caf\xe9.jpg"
        os.rename(folder + b"/005.jpg", latin1)
        out = os.path.join(self.root, "latin1-run")
        proc = run_train(2, streamed_args(data, out))
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        self.assertEqual(read_result(out)["status"], "FINISHED")

        with open(latin1, "rb") as f:
            jpeg = f.read()
        with open(latin1, "wb") as f:
            f.write(jpeg[: len(jpeg) // 2])
        proc = run_train(2, streamed_args(data, out + "-bad", "--epochs", "3"))
        self.assertNotEqual(proc.returncode, 0)
        shown = os.path.join(data, "train", "c1", "caf\\xE9.jpg")
        self.assertIn(shown + " is truncated", proc.stderr)
        result = read_result(out + "-bad")  # json.load reads UTF-8: the name is text there too
        self.assertEqual(result["status"], "FAILED")
        self.assertIn(shown, result["error"])

    def test_threads_follow_the_affinity_mask(self):
        if len(os.sched_getaffinity(0)) < 2:
            self.skipTest("needs 2 CPUs")
        runs = {
            "taskset": ["taskset", "-c", "0", TRAIN],
            "free": [TRAIN],
            "two_ranks": [MPIRUN, *MPI_ARGS, "--bind-to", "none", "-np", "2", TRAIN],
        }
        threads = {}
        for name, prefix in runs.items():
            out = os.path.join(self.root, "threads-" + name)
            cmd = prefix + ["--max_steps", "1", "--train_subset", "512", "--test_subset", "256", "--batch_size", "64",
                            "--linear_epochs", "0", "--curve_train_samples", "0", "--out_dir", out]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
            threads[name] = [(r.get("threads"), r.get("cpus")) for r in read_result(out)["environment"]["ranks"]]
        cores = len(os.sched_getaffinity(0))
        all_cpus = ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
        self.assertEqual(threads["taskset"], [(1, "0")])
        self.assertEqual(threads["free"], [(cores, all_cpus)])
        self.assertEqual(threads["two_ranks"], [(cores // 2, all_cpus)] * 2)


if __name__ == "__main__":
    unittest.main()
