"""--save_embeddings end to end: a 2-rank run on uneven shards writes DIR/embeddings/{train,test}_{features,embeddings,
labels,indices}.npy for exactly the rows its final evaluation used, and tempered-analyze metrics on the saved test
embeddings gives the run's own uniformity and tolerance.
Run from tests/ with TEMPERED_BIN=<build dir>: /usr/bin/python3 -m unittest -v saved_embeddings_test
"""
import gzip
import json
import os
import subprocess
import unittest

import numpy as np

from tempered_testing import BIN, FASHION_MNIST, TempDir, read_result, run_train

ANALYZE = os.path.join(BIN, "launch", "tempered-analyze")
TRAIN_ROWS, TEST_ROWS, METRIC_ROWS = 301, 101, 60  # odd: the two ranks embed blocks of different sizes


def idx_labels(name):
    """The labels of a Fashion-MNIST IDX label file (an 8-byte header, then one byte per label)."""
    with gzip.open(os.path.join(FASHION_MNIST, name)) as f:
        return np.frombuffer(f.read()[8:], dtype=np.uint8).astype(np.int64)


class SavedEmbeddingsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls._tmp = TempDir()
        cls.dir = cls._tmp.__enter__()
        config = os.path.join(cls.dir, "run.pbtxt")  # metric_samples has no flag of its own
        with open(config, "w") as f:
            f.write(f"eval {{ metric_samples: {METRIC_ROWS} }}\n")
        cls.out_dir = os.path.join(cls.dir, "run")
        proc = run_train(2, ["--config", config, "--train_subset", str(TRAIN_ROWS), "--test_subset", str(TEST_ROWS),
                             "--batch_size", "32", "--max_steps", "3", "--linear_epochs", "2",
                             "--curve_train_samples", "0", "--eval_every_epochs", "0", "--save_embeddings",
                             "--out_dir", cls.out_dir])
        assert proc.returncode == 0, proc.stderr[-3000:]
        cls.result = read_result(cls.out_dir)

    @classmethod
    def tearDownClass(cls):
        cls._tmp.__exit__(None, None, None)

    def load(self, name):
        return np.load(os.path.join(self.out_dir, "embeddings", name + ".npy"))

    def test_every_array_holds_the_rows_the_evaluation_used(self):
        labels = {"train": idx_labels("train-labels-idx1-ubyte.gz"), "test": idx_labels("t10k-labels-idx1-ubyte.gz")}
        for split, rows in (("train", TRAIN_ROWS), ("test", TEST_ROWS)):
            with self.subTest(split=split):
                features, embeddings = self.load(split + "_features"), self.load(split + "_embeddings")
                self.assertEqual(features.dtype, np.float32)
                self.assertEqual(embeddings.dtype, np.float32)
                self.assertEqual(features.shape[0], rows)
                self.assertEqual(embeddings.shape[0], rows)
                # The backbone's pooled features (ReLU outputs, not normalised), then the head's unit rows.
                self.assertGreaterEqual(features.min(), 0.0)
                self.assertFalse(np.allclose(np.linalg.norm(features, axis=1), 1.0, rtol=1e-3))
                np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)
                # data.*_subset is a class-stratified sample: its rows' file positions, ascending, and their labels.
                indices = self.load(split + "_indices")
                self.assertEqual(indices.dtype, np.int64)
                self.assertTrue(np.all(np.diff(indices) > 0))
                self.assertGreater(indices.max(), rows, "not the first rows of the file")
                np.testing.assert_array_equal(self.load(split + "_labels"), labels[split][indices])
                self.assertEqual(len(set(labels[split][indices].tolist())), 10, "every class")
        # Not rows of one rank repeated: the second rank's block differs from the first's.
        embeddings = self.load("train_embeddings")
        self.assertFalse(np.allclose(embeddings[:TRAIN_ROWS // 2], embeddings[TRAIN_ROWS // 2:2 * (TRAIN_ROWS // 2)]))

    def test_result_counts_the_rows_of_the_saved_arrays(self):
        final = self.result["final"]
        self.assertEqual(final["metric_samples"], METRIC_ROWS)
        self.assertEqual(final["knn_train_samples"], TRAIN_ROWS)
        self.assertEqual(final["knn_test_samples"], TEST_ROWS)

    def test_result_names_the_arrays_each_metric_used(self):
        inputs = self.result["final"]["inputs"]
        self.assertEqual(inputs, {"knn": "embeddings", "linear": "features", "uniformity_tolerance": "embeddings",
                                  "alignment_separation_entropy": "augmented_view_embeddings",
                                  "metric_samples": f"class-stratified {METRIC_ROWS} of {TEST_ROWS}",
                                  "knn_samples": f"all {TRAIN_ROWS} training, all {TEST_ROWS} test images"})
        # The named arrays give the run's own kNN top-1 (the trainer's weighted kNN, written again in numpy).
        knn = self.result["config"]["eval"]
        train = self.load("train_" + inputs["knn"]).astype(np.float64)
        test = self.load("test_" + inputs["knn"]).astype(np.float64)
        train_labels, test_labels = self.load("train_labels"), self.load("test_labels")
        k = min(knn["knn_k"], len(train))
        sims = test @ train.T
        top = np.argsort(-sims, axis=1)[:, :k]
        votes = np.zeros((len(test), 10))
        for row in range(len(test)):
            np.add.at(votes[row], train_labels[top[row]], np.exp(sims[row, top[row]] / knn["knn_temperature"]))
        ours = 100.0 * np.mean(votes.argmax(1) == test_labels)
        self.assertAlmostEqual(ours, self.result["final"]["knn_top1"], delta=100.0 / TEST_ROWS + 1e-9)

    def test_analyze_reproduces_the_runs_uniformity_and_tolerance(self):
        emb = os.path.join(self.out_dir, "embeddings")
        proc = subprocess.run([ANALYZE, "metrics", "--embeddings", os.path.join(emb, "test_embeddings.npy"),
                               "--labels", os.path.join(emb, "test_labels.npy"), "--rows", str(METRIC_ROWS)],
                              capture_output=True, text=True, timeout=120)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        ours = json.loads(proc.stdout)
        self.assertEqual(ours["metric_samples"], METRIC_ROWS)
        final = self.result["final"]
        # float32 in the trainer, float64 here.
        self.assertAlmostEqual(ours["uniformity"], final["uniformity"], delta=1e-4 * abs(final["uniformity"]))
        self.assertAlmostEqual(ours["tolerance"], final["tolerance"], delta=1e-4)
        # All rows give other numbers: --rows is what makes them the run's.
        proc = subprocess.run([ANALYZE, "metrics", "--embeddings", os.path.join(emb, "test_embeddings.npy"),
                               "--labels", os.path.join(emb, "test_labels.npy")], capture_output=True, text=True,
                              timeout=120)
        self.assertNotAlmostEqual(json.loads(proc.stdout)["uniformity"], final["uniformity"], places=5)

    def test_rows_out_of_range_is_one_sentence(self):
        emb = os.path.join(self.out_dir, "embeddings")
        proc = subprocess.run([ANALYZE, "metrics", "--embeddings", os.path.join(emb, "test_embeddings.npy"),
                               "--labels", os.path.join(emb, "test_labels.npy"), "--rows", str(TEST_ROWS + 1)],
                              capture_output=True, text=True, timeout=120)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("--rows 102 must be 0 (all) or in [2, 101]", proc.stderr)
        self.assertNotIn("terminate", proc.stderr)


if __name__ == "__main__":
    unittest.main()
