"""TensorBoard event files read back by an independent reader: the TFRecord framing parsed by hand, every CRC checked
with a pure-Python crc32c, and the Event protos decoded by classes that protoc generates from proto/tensorboard.proto
(Debian's python3-protobuf). The file is written by event_writer_test's SampleForPythonReader (see WriteSample)."""
import glob
import os
import socket
import struct
import subprocess
import sys
import unittest

from tempered_testing import BIN, SOURCE, TempDir


def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ (0x82F63B78 if c & 1 else 0)
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data):
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_records(path):
    """The payloads of a TFRecord file; fails on any bad CRC or trailing bytes."""
    with open(path, "rb") as f:
        data = f.read()
    records, offset = [], 0
    while offset < len(data):
        header = data[offset:offset + 12]
        if len(header) < 12:
            raise ValueError(f"truncated header at byte {offset}")
        (length,), (length_crc,) = struct.unpack("<Q", header[:8]), struct.unpack("<I", header[8:])
        if masked_crc32c(header[:8]) != length_crc:
            raise ValueError(f"bad length CRC at byte {offset}")
        payload = data[offset + 12:offset + 12 + length]
        footer = data[offset + 12 + length:offset + 16 + length]
        if len(payload) != length or len(footer) != 4:
            raise ValueError(f"truncated record at byte {offset}")
        if masked_crc32c(payload) != struct.unpack("<I", footer)[0]:
            raise ValueError(f"bad payload CRC at byte {offset}")
        records.append(payload)
        offset += 16 + length
    return records


def float32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


class Crc32cTest(unittest.TestCase):
    def test_check_value(self):
        self.assertEqual(crc32c(b"123456789"), 0xE3069283)
        # The 12-byte header every TensorFlow event file starts with (its 24-byte file_version record).
        self.assertEqual(struct.pack("<I", masked_crc32c(struct.pack("<Q", 24))), b"\xa3\x7f\x4b\x22")


class EventFileTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = TempDir()
        tmp = cls.tmp.__enter__()
        subprocess.run(["protoc", f"--proto_path={os.path.join(SOURCE, 'proto')}", f"--python_out={tmp}",
                        "tensorboard.proto"], check=True)
        sys.path.insert(0, tmp)
        import tensorboard_pb2
        cls.pb = tensorboard_pb2
        sample_dir = os.path.join(tmp, "run")
        proc = subprocess.run([os.path.join(BIN, "tests", "event_writer_test"),
                               "--gtest_filter=EventWriterTest.SampleForPythonReader"],
                              env=dict(os.environ, TEMPERED_EVENT_SAMPLE_DIR=sample_dir),
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        cls.files = glob.glob(os.path.join(sample_dir, "events.out.tfevents.*"))

    @classmethod
    def tearDownClass(cls):
        sys.path.remove(cls.tmp.path)
        cls.tmp.__exit__(None, None, None)

    def events(self):
        self.assertEqual(len(self.files), 1, self.files)
        events = []
        for payload in read_records(self.files[0]):
            event = self.pb.Event()
            event.ParseFromString(payload)
            self.assertEqual(event.SerializeToString(), payload)  # no unknown or misnumbered fields
            events.append(event)
        return events

    def test_file_name(self):
        name = os.path.basename(self.files[0])
        self.assertTrue(name.startswith("events.out.tfevents."), name)
        seconds, host = name[len("events.out.tfevents."):].split(".", 1)
        self.assertTrue(seconds.isdigit(), name)
        self.assertEqual(host, socket.gethostname())

    def test_first_record_is_the_file_version(self):
        first = self.events()[0]
        self.assertEqual(first.WhichOneof("what"), "file_version")
        self.assertEqual(first.file_version, "brain.Event:2")
        self.assertGreater(first.wall_time, 1.6e9)

    def test_scalars(self):
        scalars = [(e.step, v.tag, v.simple_value) for e in self.events()[1:]
                   for v in e.summary.value if v.WhichOneof("value") == "simple_value"]
        self.assertEqual(scalars, [(1, "train/loss", 4.5), (2, "train/loss", 4.25), (2, "train/lr", float32(0.1)),
                                   (3, "eval/knn_top1", 71.25)])

    def test_histogram(self):
        values = [-1.0, -0.5, 0.0, 0.5, 1.0, 1.0]
        histograms = [(e.step, v) for e in self.events() for v in e.summary.value if v.WhichOneof("value") == "histo"]
        self.assertEqual(len(histograms), 1)
        step, value = histograms[0]
        h = value.histo
        self.assertEqual((step, value.tag), (2, "similarity/positive"))
        self.assertEqual((h.min, h.max, h.num, h.sum, h.sum_squares),
                         (-1.0, 1.0, 6.0, sum(values), sum(v * v for v in values)))
        # Even buckets between min and max, bucket_limit the right edges; each value in [left, right).
        n = len(h.bucket)
        self.assertEqual(len(h.bucket_limit), n)
        limits = [-1.0 + 2.0 * (i + 1) / n for i in range(n)]
        for got, want in zip(h.bucket_limit, limits):
            self.assertAlmostEqual(got, want, places=12)
        expected = [0] * n
        for v in values:
            expected[min(int((v - h.min) / (h.max - h.min) * n), n - 1)] += 1
        self.assertEqual(list(h.bucket), expected)


if __name__ == "__main__":
    unittest.main()


class TrainingRunEventsTest(unittest.TestCase):
    """A real tempered-train run (2 ranks) writes one event file whose scalars match its result.json."""

    def test_run_writes_matching_events(self):
        from tempered_testing import read_result, run_train
        with TempDir() as tmp:
            subprocess.run(["protoc", f"--proto_path={os.path.join(SOURCE, 'proto')}", f"--python_out={tmp}",
                            "tensorboard.proto"], check=True)
            sys.path.insert(0, tmp)
            try:
                import tensorboard_pb2
            finally:
                sys.path.remove(tmp)
            out = os.path.join(tmp, "run")
            proc = run_train(2, ["--train_subset", "512", "--test_subset", "256", "--batch_size", "64",
                                 "--max_steps", "4", "--log_every_steps", "2", "--linear_epochs", "0",
                                 "--out_dir", out])
            self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
            files = glob.glob(os.path.join(out, "events.out.tfevents.*"))
            self.assertEqual(len(files), 1, files)  # rank 0 only
            scalars, histograms = {}, set()
            for payload in read_records(files[0]):
                event = tensorboard_pb2.Event()
                event.ParseFromString(payload)
                for value in event.summary.value:
                    if value.HasField("histo"):
                        histograms.add(value.tag)
                        self.assertGreater(value.histo.num, 0)
                    else:
                        scalars[(value.tag, event.step)] = value.simple_value
            result = read_result(out)
            for entry in result["step_loss"]:
                step = int(entry["step"])
                if step % 2 == 0:
                    self.assertEqual(scalars[("train/loss", step)], float32(entry["loss"]))
            self.assertEqual(scalars[("eval/knn_top1", 4)], float32(result["final"]["knn_top1"]))
            self.assertEqual(scalars[("eval/uniformity", 4)], float32(result["final"]["uniformity"]))
            self.assertIn(("train/lr", 2), scalars)
            # The convergence curve of the (partial) epoch and the weight norm, beside the full evaluation.
            epoch = result["epochs"][-1]
            self.assertEqual(scalars[("curve/uniformity", 4)], float32(epoch["metrics"]["uniformity"]))
            self.assertEqual(scalars[("curve/knn_top1", 4)], float32(epoch["metrics"]["knn_top1"]))
            self.assertEqual(scalars[("train/weight_norm", 4)], float32(epoch["weight_norm"]))
            self.assertNotIn(("curve/linear_top1", 4), scalars)
            self.assertTrue(histograms, "no similarity histograms")
