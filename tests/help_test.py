"""--help of the three binaries: their own flags only (none of LibTorch's, glog's or gflags'), every flag that the
binary's main.cc defines, grouped, each with a default and, for tempered-train, the RunConfig field it overrides;
--helpshort and -h print the same, --helpfull keeps gflags' full list.
Run from tests/ with TEMPERED_BIN=<build dir>: /usr/bin/python3 -m unittest -v help_test
"""
import os
import re
import subprocess
import unittest

from tempered_testing import BIN, SOURCE

BINARIES = {  # binary -> the file that defines its flags
    "trainer/tempered-train": "trainer/main.cc",
    "launch/tempered-sweep": "launch/sweep/sweep_main.cc",
    "launch/tempered-analyze": "launch/analyze/analyze_main.cc",
}
TRAIN_GROUPS = ["data", "model", "loss", "optimiser", "evaluation", "run"]
THIRD_PARTY = ["caffe2_", "logtostderr", "minloglevel", "flagfile", "fromenv", "torch_"]


def run(binary, *args):
    return subprocess.run([os.path.join(BIN, binary), *args], capture_output=True, text=True, timeout=60)


def defined_flags(main_cc):
    with open(os.path.join(SOURCE, main_cc)) as f:
        return re.findall(r"^DEFINE_\w+\((\w+),", f.read(), re.M)


def listed_flags(help_text):
    """{flag: (group, its entry's text)}, from the lines "  --flag=DEFAULT  what it does [field]"."""
    flags, group = {}, None
    for line in help_text.splitlines():
        if re.match(r"^[a-z][a-z ]*:$", line):
            group = line[:-1]
        elif m := re.match(r"^  --(\w+)=(\S*)", line):
            flags[m.group(1)] = [group, line]
        elif line.startswith("      ") and flags and group:  # a wrapped description continues the last entry
            last = list(flags)[-1]
            flags[last][1] += " " + line.strip()
    return flags


class HelpTest(unittest.TestCase):
    def test_help_lists_exactly_the_flags_its_main_cc_defines(self):
        for binary, main_cc in BINARIES.items():
            with self.subTest(binary=binary):
                r = run(binary, "--help")
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertTrue(r.stdout.startswith(os.path.basename(binary) + ": "), r.stdout[:200])
                listed = listed_flags(r.stdout)
                defined = defined_flags(main_cc)
                self.assertGreater(len(defined), 5, main_cc)
                self.assertEqual(sorted(listed), sorted(defined), "listed in --help vs defined in " + main_cc)
                self.assertNotIn("caffe2", r.stdout)
                for name in THIRD_PARTY:  # the footer may name --flagfile; no entry may be one
                    self.assertEqual([flag for flag in listed if flag.startswith(name)], [], name)
                self.assertNotIn("other:", r.stdout.splitlines(), "a flag of %s has no group" % main_cc)
                self.assertLess(len(r.stdout.splitlines()), 100)
                self.assertIn("examples:", r.stdout)

    def test_helpshort_and_h_print_the_same_and_helpfull_everything(self):
        for binary, main_cc in BINARIES.items():
            with self.subTest(binary=binary):
                help_text = run(binary, "--help").stdout
                self.assertEqual(run(binary, "--helpshort").stdout, help_text)
                self.assertEqual(run(binary, "-h").stdout, help_text)
                full = run(binary, "--helpfull")
                for name in defined_flags(main_cc) + ["logtostderr", "flagfile"]:
                    self.assertIn("-" + name + " ", full.stdout, name)
                self.assertGreater(len(full.stdout.splitlines()), 2 * len(help_text.splitlines()))

    def test_train_flags_are_grouped_with_their_defaults_and_config_fields(self):
        r = run("trainer/tempered-train", "--help")
        headings = [line[:-1] for line in r.stdout.splitlines() if re.match(r"^[a-z][a-z ]*:$", line)]
        self.assertEqual(headings[:len(TRAIN_GROUPS)], TRAIN_GROUPS)
        listed = listed_flags(r.stdout)
        with open(os.path.join(SOURCE, "trainer/main.cc")) as f:
            table = re.findall(r'\{"(\w+)", "(\w+)", "([\w.]*)"\}', f.read())
        self.assertEqual(sorted(flag for flag, _, _ in table), sorted(listed))
        for flag, group, field in table:
            self.assertEqual(listed[flag][0], group, flag)
            if field:
                self.assertIn("[" + field + "]", listed[flag][1], flag)
        # Defaults are RunConfig's (common/config.cc DefaultRunConfig), not the flags' empty strings.
        for entry in ("--tau=0.2 ", "--loss=infonce ", "--batch_size=256 ", "--lr=0.06 ", "--model=small_cnn ",
                      "--norm=batch ", "--linear_epochs=10 ", "--bf16=false "):
            self.assertIn(entry, r.stdout)


if __name__ == "__main__":
    unittest.main()
