#!/usr/bin/python3
"""Writes the seed corpus and dictionary of every fuzz target (tests/fuzz/<target>_fuzzer.cc):
    seeds.py OUT_DIR  ->  OUT_DIR/<target>/seed-*  and  OUT_DIR/<target>.dict
Seeds are small valid inputs (libFuzzer mutates from them), generated here, plus the committed files of
tests/fuzz/seeds/<target>/ (tiny images: there is no JPEG encoder in the standard library). The text-proto
dictionaries hold every field and enum name of proto/tempered.proto, so new fields are fuzzed without editing this
file. Standard library only."""
import gzip
import os
import re
import shutil
import struct
import sys
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(os.path.dirname(HERE))


def idx(magic, sizes, data):
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", s) for s in sizes) + bytes(data)


def idx_seeds():
    images = idx(0x803, [2, 3, 3], range(18))
    labels = idx(0x801, [3], [0, 9, 4])
    return {"images": images, "labels": labels, "images.gz": gzip.compress(images, mtime=0),
            "labels.gz": gzip.compress(labels, mtime=0), "no-images": idx(0x803, [0, 28, 28], b""),
            "two-members.gz": gzip.compress(labels[:6], mtime=0) + gzip.compress(labels[6:], mtime=0)}


def npy(descr, shape, data, version=1):
    shape_text = "(%s)" % ("".join("%d," % shape[0]) if len(shape) == 1 else ", ".join(map(str, shape)))
    header = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shape_text)
    length = struct.pack("<H" if version == 1 else "<I", len(header) + 1)
    return b"\x93NUMPY" + bytes([version, 0]) + length + header.encode() + b"\n" + data


def npy_seeds():
    return {"f4-matrix": npy("<f4", (2, 3), struct.pack("<6f", *range(6))),
            "f8-matrix": npy("<f8", (3, 2), struct.pack("<6d", *range(6))),
            "i8-labels": npy("<i8", (3,), struct.pack("<3q", 0, 1, 2)),
            "i4-labels-v2": npy("<i4", (3,), struct.pack("<3i", 2, 1, 0), version=2),
            "empty": npy("<f4", (0, 4), b""),
            "scalar-v3": npy("<f8", (), struct.pack("<d", 1.5), version=3)}


def cifar_seeds():
    pixels = bytes((7 * i) % 256 for i in range(3072))
    return {"cifar10-one": bytes([3]) + pixels, "cifar10-two": bytes([9]) + pixels + bytes([0]) + pixels,
            "cifar100-one": bytes([4, 87]) + pixels}


def mat_element(kind, data):
    """A MAT v5 data element: tag (type, byte count) and data padded to 8 bytes."""
    return struct.pack("<II", kind, len(data)) + data + b"\0" * (-len(data) % 8)


def mat_matrix(name, mx_class, dims, data_type, data):
    """A miMATRIX element (type 14): array flags (class), dimensions, name, real part."""
    return mat_element(14, mat_element(6, struct.pack("<II", mx_class, 0)) +
                       mat_element(5, struct.pack("<%di" % len(dims), *dims)) + mat_element(1, name.encode()) +
                       mat_element(data_type, data))


def svhn_seeds():
    """test_32x32.mat as MATLAB -v5 writes it: X uint8 32x32x3x1 and y, plain and zlib-compressed (miCOMPRESSED)."""
    header = b"MATLAB 5.0 MAT-file, written by tests/fuzz/seeds.py".ljust(116) + b"\0" * 8 + struct.pack("<H", 0x100)
    header += b"IM"
    x = mat_matrix("X", 9, [32, 32, 3, 1], 2, bytes((5 * i) % 256 for i in range(3072)))  # mxUINT8, miUINT8
    y_uint8 = mat_matrix("y", 9, [1, 1], 2, bytes([10]))
    y_double = mat_matrix("y", 6, [1, 1], 9, struct.pack("<d", 3.0))  # mxDOUBLE, miDOUBLE
    compress = lambda element: mat_element(15, zlib.compress(element))
    return {"plain": header + x + y_uint8, "compressed": header + compress(x) + compress(y_double)}


def sweep_spec_seeds():
    with open(os.path.join(SOURCE, "launch", "sweep", "sweep_spec.cc")) as f:
        default = re.search(r'R"pb\((.*?)\)pb"', f.read(), re.S).group(1)
    return {"default": default.encode(),
            "axes": b'base { epochs: 1 batch_size: 64 }\nloss: ["hard"]\nhard_k: [4, 8]\nseed: [1, 2]\n'
                    b'axis { field: "optim.lr" values: ["0.1", "0.3"] }\naxis { field: "model.norm" values: ["none"] }\n'
                    b'core_budget: 2\nmax_parallel_runs: 2\n',
            "slurm": b'tau: 0.5\nbackend: SLURM\nranks_per_run: 2\nthreads_per_rank: 1\nmax_attempts: 3\n'}


def run_config_seeds():
    return {"full": b"""data { dataset: "fashion_mnist" train_subset: 256 test_subset: 128 crop_scale_min: 0.2
crop_scale_max: 1 color_jitter: 0.4 grayscale_prob: 0.2 flip_prob: 0.5 workers: 1 }
model { arch: RESNET18 norm: SYNC head: MLP embed_dim: 64 width: 16 }
loss { name: HARD tau: 0.1 hard_k: 8 hard_fraction: 0.08 negatives: MEMORY_BANK bank_momentum: 0.5 }
optim { lr: 0.06 momentum: 0.9 weight_decay: 5e-4 schedule: STEP warmup_epochs: 0.5 decay_epochs: [2, 3]
decay_factor: 0.1 }
eval { knn_k: 20 knn_temperature: 0.07 metric_samples: 100 every_epochs: 1 at_init: true linear_epochs: 0 }
epochs: 2 max_steps: 5 batch_size: 64 seed: 7 threads: 1 out_dir: "run" log_every_steps: 1 device: "cpu"
checkpoint_every_steps: 4
""",
            "overrides": b'#set loss.tau=0.5\n#set model.norm=none\n#set optim.decay_epochs=1,2\nloss { name: SIMPLE }\n',
            "empty": b""}


def proto_dictionary():
    """Every identifier of the schema as a quoted dictionary entry, plus text-format punctuation and literals."""
    with open(os.path.join(SOURCE, "proto", "tempered.proto")) as f:
        proto = re.sub(r"//.*", "", f.read())
    words = set(re.findall(r"\b([A-Za-z_][A-Za-z0-9_]*)\s*=\s*\d+\s*;", proto))
    words |= {"{", "}", ":", "[", "]", ",", "#set ", "=", "true", "false", "inf", "-inf", "nan", "-", "0x", "e-",
              "1e30", "2147483648", "9223372036854775808", '"', "'", "\\", "<", ">", "."}
    words |= {w.lower() for w in words if w.isupper()}  # SetFieldByPath takes enum values in any case
    words |= {"loss.tau", "loss.name", "loss.hard_k", "optim.lr", "model.norm", "data.dataset", "seed"}
    return "".join('"%s"\n' % w.replace("\\", "\\\\").replace('"', '\\"') for w in sorted(words))


def main(out_dir):
    targets = {"idx": (idx_seeds(), None), "cifar": (cifar_seeds(), None), "svhn": (svhn_seeds(), None),
               "image_folder": ({}, None), "npy": (npy_seeds(), '"\\x93NUMPY"\n"descr"\n"fortran_order"\n'
                                                   '"shape"\n"False"\n"True"\n"<f4"\n"<f8"\n"<i4"\n"<i8"\n">f4"\n'),
               "run_config": (run_config_seeds(), proto_dictionary()),
               "sweep_spec": (sweep_spec_seeds(), proto_dictionary())}
    for target, (seeds, dictionary) in targets.items():
        os.makedirs(os.path.join(out_dir, target), exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(out_dir, target, "seed-" + name), "wb") as f:
                f.write(data)
        committed = os.path.join(HERE, "seeds", target)
        for name in os.listdir(committed) if os.path.isdir(committed) else []:
            shutil.copy(os.path.join(committed, name), os.path.join(out_dir, target, "seed-" + name))
        if dictionary:
            with open(os.path.join(out_dir, target + ".dict"), "w") as f:
                f.write(dictionary)


if __name__ == "__main__":
    main(sys.argv[1])
