"""The paper's setups in specs/: each spec, as written, parses and has every grid point validated by
tempered-sweep; it holds the paper's values (docs/paper.md §5) and grid; and it runs, as a dry run on the CPU, through
tempered-sweep on a tiny data set generated in its format, every run finishing with finite losses and a resolved
config (result.json) that kept the paper's values the dry run did not override.

The dry run is the spec with only these changed (parsed and rewritten with protoc's Python classes): device cpu,
2 steps of 16 images, the generated data set, linear evaluation 1 epoch, hard_k 8 (the tiny bank has 47-63
negatives), the tau axis cut to its first and last values and the other axes to their first, one rank of one
thread per run. Run from tests/ with TEMPERED_BIN=<build dir>: /usr/bin/python3 -m unittest -v specs_test
"""
import glob
import json
import math
import os
import re
import stat
import subprocess
import sys
import unittest

from datasets_e2e_test import write_cifar10, write_cifar100, write_imagefolder, write_svhn
from tempered_testing import BIN, FASHION_MNIST, SOURCE, TempDir

SWEEP = os.path.join(BIN, "launch", "tempered-sweep")
SPECS = os.path.join(SOURCE, "specs")

PAPER_TAUS = [0.05, 0.07, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0]
PAPER_LOSSES = ["infonce", "hard", "simple", "hard_simple"]
TAU_LOSSES = {"infonce", "hard"}  # launch/sweep/sweep_spec.cc LossUsesTau: the others run once, whatever the tau axis

# docs/paper.md §5, as fields of the resolved RunConfig in result.json (protobuf's JSON mapping, proto field names).
PAPER_COMMON = {
    "model.norm": "BATCH", "model.head": "LINEAR", "model.embed_dim": 128,
    "loss.negatives": "MEMORY_BANK", "loss.bank_momentum": 0.5,
    "optim.lr": 0.03, "optim.momentum": 0.9, "optim.schedule": "STEP", "optim.decay_epochs": [160, 190],
    "optim.decay_factor": 0.1, "optim.warmup_epochs": 0,
    "data.crop_scale_min": 0.2, "data.crop_scale_max": 1.0, "data.color_jitter": 0.4, "data.grayscale_prob": 0.2,
    "data.flip_prob": 0.5,
    "eval.knn_k": 200, "eval.knn_temperature": 0.07, "eval.metric_samples": 1000,
}
# The values the dry run overrides, checked in the spec as written.
PAPER_WRITTEN = {"epochs": 200, "batch_size": 128, "device": "cuda", "loss.hard_k": 4095, "eval.linear_epochs": 100,
                 "bf16": False}
PAPER_SPECS = {
    "paper_cifar10.pbtxt": {"data.dataset": "cifar10", "model.arch": "RESNET18", "optim.weight_decay": 5e-4},
    "paper_cifar100.pbtxt": {"data.dataset": "cifar100", "model.arch": "RESNET18", "optim.weight_decay": 5e-4},
    "paper_svhn.pbtxt": {"data.dataset": "svhn", "model.arch": "RESNET18", "optim.weight_decay": 5e-4},
    "paper_imagenet100.pbtxt": {"data.dataset": "imagefolder", "model.arch": "RESNET50", "optim.weight_decay": 1e-4},
}

DRY_STEPS = 2


def write_linked_imagefolder(root):
    """An image folder whose class folders are symbolic links, as the ImageNet-100 spec tells users to make it."""
    real = root + ".real"
    os.makedirs(real)
    write_imagefolder(real, classes=4, train=12, val=6)
    for split in ("train", "val"):
        os.makedirs(os.path.join(root, split))
        for name in os.listdir(os.path.join(real, split)):
            os.symlink(os.path.join(real, split, name), os.path.join(root, split, name))


# dataset -> writes a tiny copy into a directory (None: the data set is installed; the dry run takes a subset).
GENERATORS = {
    "cifar10": lambda root: write_cifar10(root, train=64, test=32),
    "cifar100": lambda root: write_cifar100(root, train=64, test=32),
    "svhn": lambda root: write_svhn(root, train=64, test=32),
    "imagefolder": write_linked_imagefolder,
    "fashion_mnist": None,
}


def field(message, path):
    """A field of a JSON object (result.json) or of a protobuf message by its dotted path; enums by name and
    repeated fields as lists, as in the JSON."""
    for name in path.split("."):
        if isinstance(message, dict):
            message = message[name]
            continue
        descriptor = message.DESCRIPTOR.fields_by_name[name]
        message = getattr(message, name)
        if descriptor.enum_type is not None:
            message = descriptor.enum_type.values_by_number[message].name
        elif descriptor.label == descriptor.LABEL_REPEATED:
            message = list(message)
    return message


def close(a, b):
    if isinstance(b, list):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b))
    if isinstance(b, float) or isinstance(a, float):
        return math.isclose(float(a), b, rel_tol=1e-6, abs_tol=1e-12)
    return a == b


class SpecsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        for path in (SWEEP, os.path.join(BIN, "trainer", "tempered-train")):
            if not os.access(path, os.X_OK):
                raise AssertionError(f"{path} is missing: build tempered-sweep and tempered-train (TEMPERED_BIN={BIN})")
        cls.tmp = TempDir()
        tmp = cls.tmp.__enter__()
        subprocess.run(["protoc", f"--proto_path={os.path.join(SOURCE, 'proto')}", f"--python_out={tmp}",
                        "tempered.proto"], check=True)
        sys.path.insert(0, tmp)
        import tempered_pb2
        from google.protobuf import text_format
        cls.pb, cls.text_format = tempered_pb2, text_format
        # A squeue that fails: --backend slurm then stops after the spec was read and every grid point validated.
        cls.no_slurm = os.path.join(tmp, "no-slurm")
        os.makedirs(cls.no_slurm)
        squeue = os.path.join(cls.no_slurm, "squeue")
        with open(squeue, "w") as f:
            f.write("#!/bin/sh\necho 'no Slurm in specs_test' >&2\nexit 1\n")
        os.chmod(squeue, stat.S_IRWXU)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.__exit__(None, None, None)

    def read_spec(self, name):
        with open(os.path.join(SPECS, name)) as f:
            text = f.read()
        return text, self.text_format.Parse(text, self.pb.SweepSpec())

    def test_every_paper_spec_is_there(self):
        present = {os.path.basename(p) for p in glob.glob(os.path.join(SPECS, "*.pbtxt"))}
        self.assertLessEqual(set(PAPER_SPECS), present)

    def test_paper_cifar10(self):
        self.check_paper_spec("paper_cifar10.pbtxt")

    def test_paper_cifar100(self):
        self.check_paper_spec("paper_cifar100.pbtxt")

    def test_paper_svhn(self):
        self.check_paper_spec("paper_svhn.pbtxt")

    def test_paper_imagenet100(self):
        text = self.check_paper_spec("paper_imagenet100.pbtxt")
        # The CMC class list in its header: 100 distinct wnids.
        self.assertEqual(len(set(re.findall(r"\bn\d{8}\b", text))), 100)

    def test_other_specs_parse_and_dry_run(self):
        for path in sorted(glob.glob(os.path.join(SPECS, "*.pbtxt"))):
            name = os.path.basename(path)
            if name not in PAPER_SPECS:
                with self.subTest(spec=name):
                    self.check_parses_as_written(name)
                    self.dry_run(name)

    def check_paper_spec(self, name):
        text, spec = self.read_spec(name)
        self.assertIn("tempered-sweep --spec specs/" + name, text, "the header says how to run it")
        self.assertIn("data_dir", text)
        for path, value in {**PAPER_COMMON, **PAPER_WRITTEN, **PAPER_SPECS[name]}.items():
            if path == "optim.warmup_epochs":
                continue  # left unset for its default 0 (the resolved value is checked in the dry run)
            self.assertTrue(close(field(spec.base, path), value), f"{name}: base.{path} = {field(spec.base, path)}")
        self.assertTrue(close(list(spec.tau), PAPER_TAUS), list(spec.tau))
        self.assertEqual(sorted(spec.loss), sorted(PAPER_LOSSES))
        self.assertIn(1, spec.seed)  # the paper's table is one run per cell
        self.assertEqual(len(spec.hard_k), 0)
        self.assertEqual(len(spec.axis), 0)
        self.assertEqual(spec.gpus_per_rank, 1, "each concurrent run on a GPU of its own")
        self.check_parses_as_written(name)
        results = self.dry_run(name)
        for run, result in results.items():
            config = result["config"]
            for path, value in {**PAPER_COMMON, **PAPER_SPECS[name]}.items():
                self.assertTrue(close(field(config, path), value), f"{name} {run}: {path} = {field(config, path)}")
        return text

    def check_parses_as_written(self, name):
        """tempered-sweep reads the file as written and validates every point of its grid (field paths, values,
        ValidateConfig), then stops at the missing Slurm before it creates anything."""
        with TempDir() as tmp:
            out = os.path.join(tmp, "sweep")
            env = dict(os.environ, PATH=self.no_slurm + os.pathsep + os.environ.get("PATH", ""))
            proc = subprocess.run([SWEEP, "--spec", os.path.join(SPECS, name), "--out_dir", out, "--backend",
                                   "slurm"], capture_output=True, text=True, timeout=60, env=env)
            self.assertEqual(proc.returncode, 2, proc.stdout + proc.stderr)
            self.assertIn("the slurm backend needs a reachable Slurm", proc.stderr)
            self.assertFalse(os.path.exists(out))

    def dry_run(self, name):
        """Runs the spec's dry run through tempered-sweep; returns {run name: result.json} of its finished runs."""
        _, spec = self.read_spec(name)
        dataset = spec.base.data.dataset or "fashion_mnist"
        self.assertIn(dataset, GENERATORS, f"{name}: no tiny-data generator for dataset {dataset!r} in specs_test")
        with TempDir() as tmp:
            base = spec.base
            if GENERATORS[dataset] is None:
                base.data.data_dir = base.data.data_dir or FASHION_MNIST
                base.data.train_subset, base.data.test_subset = 64, 32
            else:
                base.data.data_dir = os.path.join(tmp, "data")
                os.makedirs(base.data.data_dir)
                GENERATORS[dataset](base.data.data_dir)
            base.device = "cpu"
            base.bf16 = False
            base.epochs = 1
            base.max_steps = DRY_STEPS
            base.batch_size = 16
            base.log_every_steps = 1
            base.eval.linear_epochs = 1
            base.loss.hard_k = 8
            if len(spec.tau) > 2:
                taus = [spec.tau[0], spec.tau[-1]]
                del spec.tau[:]
                spec.tau.extend(taus)
            for axis in (spec.seed, spec.hard_k):
                del axis[1:]
            for axis in spec.axis:
                del axis.values[1:]
            spec.ranks_per_run, spec.threads_per_rank, spec.max_parallel_runs = 1, 1, 2
            spec.gpus_per_rank = 0  # the paper specs ask for a GPU per rank; the dry run is on the CPU
            spec.core_budget, spec.max_attempts = 0, 1
            spec.backend = self.pb.SweepSpec.LOCAL
            spec_path = os.path.join(tmp, "dry.pbtxt")
            with open(spec_path, "w") as f:
                f.write(self.text_format.MessageToString(spec))

            # The points of the cut grid: tau matters only to infonce and hard.
            losses = list(spec.loss) or [self.pb.LossConfig.Name.Name(base.loss.name or 1).lower()]
            taus = list(spec.tau) or [None]
            expected = [(loss, tau) for loss in losses for tau in (taus if loss in TAU_LOSSES else [None])]

            out = os.path.join(tmp, "sweep")
            proc = subprocess.run([SWEEP, "--spec", spec_path, "--out_dir", out, "--poll_seconds", "0.2"],
                                  capture_output=True, text=True, timeout=300)
            self.assertEqual(proc.returncode, 0, f"{name}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
            self.assertTrue(os.path.exists(os.path.join(out, "report.md")))
            with open(os.path.join(out, "sweep_state.json")) as f:
                runs = json.load(f)["runs"]
            results = {}
            for run in runs:
                self.assertEqual(run["state"], "FINISHED", run)
                with open(os.path.join(out, run["run_dir"], "result.json")) as f:
                    results[os.path.basename(run["run_dir"])] = json.load(f)

        points = []
        for run, result in results.items():
            self.assertEqual(result["status"], "FINISHED", run)
            self.assertEqual(int(result["global_steps"]), DRY_STEPS, run)
            losses = [s["loss"] for s in result["step_loss"]]
            self.assertEqual(len(losses), DRY_STEPS, run)
            self.assertTrue(all(math.isfinite(l) for l in losses), f"{run}: {losses}")
            final = result["final"]
            for metric in ("knn_top1", "linear_top1", "uniformity", "alignment", "tolerance"):
                self.assertTrue(math.isfinite(final[metric]), f"{run}: {metric} {final}")
            config = result["config"]
            self.assertEqual(config["device"], "cpu")
            loss = config["loss"]["name"].lower()
            points.append((loss, config["loss"]["tau"] if loss in TAU_LOSSES else None))
        self.assertEqual(len(points), len(expected), f"{name}: runs {sorted(results)}")
        for (loss, tau), (want_loss, want_tau) in zip(sorted(points, key=str), sorted(expected, key=str)):
            self.assertEqual(loss, want_loss)
            self.assertTrue(tau == want_tau or close(tau, want_tau), (loss, tau, want_tau))
        return results


if __name__ == "__main__":
    unittest.main()
