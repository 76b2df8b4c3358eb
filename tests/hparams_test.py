"""The sweep in TensorBoard's HParams tab, read back by an independent reader: the TFRecord framing and CRCs checked
by event_reader_test's pure-Python reader, the Event decoded with classes protoc generates from proto/
tensorboard.proto, and the plugin's content decoded with classes generated here from TensorBoard's own schema of
the HParams plugin (tensorboard/plugins/hparams/api.proto and plugin_data.proto, transcribed in full below, with
the fields Tempered does not write), not from Tempered's proto/tensorboard_hparams.proto. A real sweep of four
tiny runs (two tau x two seeds, loss.tau_mode as a generic axis) must give one experiment whose hparams are the
sweep's axes and whose metrics are the eval/* scalars, and every run a session with its own values, its cell as
group and its status."""
import glob
import importlib
import os
import subprocess
import sys
import tempfile
import unittest

from event_reader_test import read_records
from tempered_testing import SOURCE, TempDir
from sweep_support import SWEEP, TRAIN

UPSTREAM = r'''
syntax = "proto3";
import "google/protobuf/struct.proto";
package tensorboard.hparams;
message Experiment {
  string name = 6; string description = 1; string user = 2; double time_created_secs = 3;
  repeated HParamInfo hparam_infos = 4; repeated MetricInfo metric_infos = 5;
}
message HParamInfo {
  string name = 1; string display_name = 2; string description = 3; DataType type = 4;
  oneof domain { google.protobuf.ListValue domain_discrete = 5; Interval domain_interval = 6; }
}
enum DataType { DATA_TYPE_UNSET = 0; DATA_TYPE_STRING = 1; DATA_TYPE_BOOL = 2; DATA_TYPE_FLOAT64 = 3; }
message Interval { double min_value = 1; double max_value = 2; }
message MetricName { string group = 1; string tag = 2; }
message MetricInfo { MetricName name = 1; string display_name = 3; string description = 4; DatasetType dataset_type = 5; }
enum DatasetType { DATASET_UNKNOWN = 0; DATASET_TRAINING = 1; DATASET_VALIDATION = 2; }
enum Status { STATUS_UNKNOWN = 0; STATUS_SUCCESS = 1; STATUS_FAILURE = 2; STATUS_RUNNING = 3; }
message HParamsPluginData {
  int32 version = 1;
  oneof data { Experiment experiment = 2; SessionStartInfo session_start_info = 3; SessionEndInfo session_end_info = 4; }
}
message SessionStartInfo {
  map<string, google.protobuf.Value> hparams = 1; string model_uri = 2; string monitor_url = 3;
  string group_name = 4; double start_time_secs = 5;
}
message SessionEndInfo { Status status = 1; double end_time_secs = 2; }
'''

SPEC = """
base {
  data { train_subset: 512 test_subset: 256 }
  epochs: 1
  batch_size: 128
  eval { metric_samples: 128 knn_k: 20 linear_epochs: 0 curve_train_samples: 0 }
}
loss: ["infonce"]
tau: [0.1, 0.5]
seed: [1, 2]
axis { field: "loss.tau_mode" values: ["constant"] }
"""


def generate(tmp, name, text, proto_path):
    """Python classes protoc generates for `text` (written to tmp/name), importable from tmp."""
    with open(os.path.join(tmp, name), "w") as f:
        f.write(text)
    subprocess.run(["protoc", f"--proto_path={tmp}", f"--proto_path={proto_path}", "--proto_path=/usr/include",
                    f"--python_out={tmp}", name],
                   check=True)
    sys.path.insert(0, tmp)
    return importlib.import_module(name.replace(".proto", "_pb2"))


def plugin_values(path, events_pb2):
    """(tag, plugin name, content) of every summary value with plugin metadata in an event file."""
    values = []
    for payload in read_records(path):
        event = events_pb2.Event()
        event.ParseFromString(payload)
        for v in event.summary.value:
            if v.HasField("metadata"):
                values.append((v.tag, v.metadata.plugin_data.plugin_name, v.metadata.plugin_data.content))
    return values


class HParamsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.temp = TempDir()
        cls.tmp = cls.temp.__enter__()
        gen = os.path.join(cls.tmp, "gen")
        os.makedirs(gen)
        cls.events_pb2 = generate(gen, "tensorboard.proto",
                                  open(os.path.join(SOURCE, "proto", "tensorboard.proto")).read(), gen)
        cls.hparams_pb2 = generate(gen, "upstream_hparams.proto", UPSTREAM, gen)
        spec = os.path.join(cls.tmp, "spec.pbtxt")
        with open(spec, "w") as f:
            f.write(SPEC)
        cls.sweep = os.path.join(cls.tmp, "sweep")
        proc = subprocess.run([SWEEP, "--spec", spec, "--out_dir", cls.sweep, "--train_binary", TRAIN],
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]

    @classmethod
    def tearDownClass(cls):
        cls.temp.__exit__(None, None, None)

    def decode(self, content):
        data = self.hparams_pb2.HParamsPluginData()
        data.ParseFromString(content)
        return data

    def test_one_experiment_with_the_axes_and_the_final_metrics(self):
        files = glob.glob(os.path.join(self.sweep, "*tfevents*"))
        self.assertEqual(len(files), 1, files)
        values = plugin_values(files[0], self.events_pb2)
        self.assertEqual([(tag, plugin) for tag, plugin, _ in values], [("_hparams_/experiment", "hparams")])
        experiment = self.decode(values[0][2]).experiment
        infos = {h.name: h for h in experiment.hparam_infos}
        self.assertEqual(set(infos), {"tau", "seed", "loss.tau_mode"})
        self.assertEqual(infos["tau"].type, self.hparams_pb2.DATA_TYPE_FLOAT64)
        self.assertEqual(sorted(v.number_value for v in infos["tau"].domain_discrete.values), [0.1, 0.5])
        self.assertEqual([v.string_value for v in infos["loss.tau_mode"].domain_discrete.values], ["CONSTANT"])
        self.assertEqual([m.name.tag for m in experiment.metric_infos],
                         ["eval/knn_top1", "eval/linear_top1", "eval/uniformity", "eval/tolerance"])

    def test_every_run_has_its_session_values_group_and_status(self):
        sessions = {}
        for path in glob.glob(os.path.join(self.sweep, "runs", "*", "*hparams*")):
            values = {tag: self.decode(content) for tag, _, content in plugin_values(path, self.events_pb2)}
            start = values["_hparams_/session_start_info"].session_start_info
            end = values["_hparams_/session_end_info"].session_end_info
            self.assertEqual(end.status, self.hparams_pb2.STATUS_SUCCESS)
            hparams = {k: (v.number_value if v.HasField("number_value") else v.string_value)
                       for k, v in start.hparams.items()}
            sessions[(hparams["tau"], hparams["seed"])] = (start.group_name, os.path.dirname(path))
        self.assertEqual(sorted(sessions), [(0.1, 1), (0.1, 2), (0.5, 1), (0.5, 2)])
        self.assertEqual(sessions[(0.1, 1)][0], sessions[(0.1, 2)][0], "the seeds of a cell are one group")
        self.assertNotEqual(sessions[(0.1, 1)][0], sessions[(0.5, 1)][0])
        # The metrics the experiment names are scalars in the same run directory (written by tempered-train).
        for _, run_dir in sessions.values():
            tags = set()
            for path in glob.glob(os.path.join(run_dir, "events.out.tfevents.*")):
                if path.endswith("hparams"):
                    continue
                for payload in read_records(path):
                    event = self.events_pb2.Event()
                    event.ParseFromString(payload)
                    tags.update(v.tag for v in event.summary.value)
            self.assertTrue({"eval/knn_top1", "eval/uniformity", "eval/tolerance"} <= tags, tags)


if __name__ == "__main__":
    unittest.main()
