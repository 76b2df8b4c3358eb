"""The documentation cannot rot silently. In README.md and docs/**/*.md:
- every relative link (markdown `[text](path)` and `![alt](path)`, with an optional `#anchor`) resolves to a file in
  the repository, and an anchor into a markdown file names one of its headings (GitHub's slugs);
- nothing refers to what is outside the repository (issue numbers, ../shared, PAPER.md and the like);
- every `--flag` given to tempered-train, tempered-sweep or tempered-analyze in a code span or block exists in that
  binary's --help / --helpfull, and a code span that is only a flag (`--resume`) names a flag of one of the three
  binaries or one of the few other tools' flags listed in OTHER_TOOLS_FLAGS;
- every ```pbtxt block parses as a SweepSpec or a RunConfig (proto/tempered.proto) and passes tempered-sweep's
  validation: the block as the spec (a RunConfig block as its `base`), run with --backend slurm and an squeue that
  fails, which stops after the spec was read and every grid point validated (as tests/specs_test.py does).
The checks are functions of one markdown file; the *Detects* tests feed them broken files and require a report.
Run from tests/ with TEMPERED_BIN=<build dir>: /usr/bin/python3 -m unittest -v docs_test
"""
import glob
import os
import re
import stat
import subprocess
import sys
import tempfile
import unittest

from tempered_testing import BIN, SOURCE, TempDir

BINARIES = {
    "tempered-train": os.path.join(BIN, "trainer", "tempered-train"),
    "tempered-sweep": os.path.join(BIN, "launch", "tempered-sweep"),
    "tempered-analyze": os.path.join(BIN, "launch", "tempered-analyze"),
}
# Flags of other tools that the docs name on their own in a code span: mpirun, sbatch, docker run, ctest (through
# tests/run.sh), docker/install-deps.sh. Flags given to a Tempered binary are never looked up here.
OTHER_TOOLS_FLAGS = {"allow-run-as-root", "oversubscribe", "mca", "hostfile", "bind-to",  # mpirun
                     "gpus-per-task",  # sbatch
                     "shm-size", "network", "ipc", "ulimit",  # docker run
                     "label-regex",  # ctest
                     "runtime", "docker"}  # docker/install-deps.sh
# Placeholders in usage lines: `[--flag overrides]`.
PLACEHOLDER_FLAGS = {"flag"}
OUTSIDE = re.compile(r"\bissues? #?\d+|\.\./shared|\b(?:PAPER|STYLE|DESIGN|ENV)\.md\b")


def doc_files(root):
    return [os.path.join(root, "README.md")] + sorted(glob.glob(os.path.join(root, "docs", "**", "*.md"),
                                                                recursive=True))


def split_code(text):
    """(prose with code removed, [fenced blocks as (language, body)], [inline code spans])."""
    blocks = [(m.group(2), m.group(3)) for m in re.finditer(r"^( *)```(\w*)\n(.*?)^\1```", text, re.M | re.S)]
    prose = re.sub(r"^( *)```\w*\n.*?^\1```", "", text, flags=re.M | re.S)
    spans = re.findall(r"`([^`]+)`", prose)
    return re.sub(r"`[^`]+`", "", prose), blocks, spans


def slug(heading):
    """GitHub's anchor of a heading: lower case, punctuation but - and _ dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]{1,2}(?=\S)|(?<=\S)[`*_]{1,2}", "", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path):
    with open(path) as f:
        prose, _, _ = split_code(f.read())
    return {slug(h) for h in re.findall(r"^#{1,6} (.*)$", prose, re.M)}


def broken_links(md_path, root):
    """Problems with the relative links of one markdown file: missing targets, unknown anchors, leaving the repo."""
    with open(md_path) as f:
        prose, _, _ = split_code(f.read())
    problems = []
    for target in re.findall(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", prose):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        resolved = os.path.normpath(os.path.join(os.path.dirname(md_path), path)) if path else md_path
        if os.path.relpath(resolved, root).startswith(".."):
            problems.append(f"{md_path}: link {target} leaves the repository")
        elif not os.path.exists(resolved):
            problems.append(f"{md_path}: link {target}: {resolved} does not exist")
        elif anchor and resolved.endswith(".md") and anchor not in anchors(resolved):
            problems.append(f"{md_path}: link {target}: no heading with anchor #{anchor} in {resolved}")
    return problems


def outside_references(md_path):
    with open(md_path) as f:
        return [f"{md_path}: refers outside the repository: {m.group(0)!r}" for m in OUTSIDE.finditer(f.read())]


def binary_invocations(code):
    """(binary, the flags after it) for each tempered-* binary invoked in a code span or block."""
    code = re.sub(r"\\\n", " ", code)  # shell line continuations
    found = []
    for line in code.split("\n"):
        for m in re.finditer(r"(?:^|(?<=[\s/]))(tempered-(?:train|sweep|analyze))\b", line):
            rest = re.split(r"\s(?:#|\||;|&&|>)", line[m.end():], maxsplit=1)[0]  # up to a comment or the next command
            found.append((m.group(1), re.findall(r"(?<![\w-])--([A-Za-z][\w-]*)", rest)))
    return found


def unknown_flags(md_path, flags_of, other_flags=OTHER_TOOLS_FLAGS):
    """Flags the file gives a Tempered binary that the binary lacks, and lone flag spans no tool has."""
    with open(md_path) as f:
        _, blocks, spans = split_code(f.read())
    problems = []
    for code in [body for _, body in blocks] + [s.replace("\n", " ") for s in spans]:
        for binary, flags in binary_invocations(code):
            for flag in flags:
                if flag not in flags_of[binary] and flag not in PLACEHOLDER_FLAGS:
                    problems.append(f"{md_path}: {binary} has no flag --{flag} (in `{code.strip()[:80]}`)")
    every = set().union(*flags_of.values()) | other_flags | PLACEHOLDER_FLAGS
    for span in spans:
        m = re.match(r"--([A-Za-z][\w-]*)", span.strip())
        if m and m.group(1) not in every:
            problems.append(f"{md_path}: no Tempered binary or listed tool has --{m.group(1)} (in `{span}`)")
    return problems


def pbtxt_blocks(md_path):
    with open(md_path) as f:
        _, blocks, _ = split_code(f.read())
    return [body for language, body in blocks if language == "pbtxt"]


def invalid_pbtxt(md_path, validate):
    """Problems of the file's pbtxt blocks; validate(text) returns None or a problem."""
    problems = []
    for i, block in enumerate(pbtxt_blocks(md_path)):
        problem = validate(block)
        if problem:
            problems.append(f"{md_path}: pbtxt block {i + 1}: {problem}")
    return problems


def help_flags(binary):
    """The flags a binary's --help and --helpfull list (gflags prints `-name (...)`, its own --help `--name`)."""
    flags = set()
    for option in ("--help", "--helpfull"):
        proc = subprocess.run([binary, option], capture_output=True, text=True, timeout=60)
        flags |= set(re.findall(r"^\s*--?([A-Za-z][\w-]*)", proc.stdout + proc.stderr, re.M))
    return flags


class Validator:
    """Parses a pbtxt block with protoc's Python classes and has tempered-sweep validate it."""

    def __init__(self, tmp):
        os.makedirs(tmp, exist_ok=True)
        subprocess.run(["protoc", f"--proto_path={os.path.join(SOURCE, 'proto')}", f"--python_out={tmp}",
                        "tempered.proto"], check=True)
        sys.path.insert(0, tmp)
        import tempered_pb2
        from google.protobuf import text_format
        self.pb, self.text_format, self.tmp = tempered_pb2, text_format, tmp
        self.no_slurm = os.path.join(tmp, "no-slurm")
        os.makedirs(self.no_slurm, exist_ok=True)
        squeue = os.path.join(self.no_slurm, "squeue")
        with open(squeue, "w") as f:
            f.write("#!/bin/sh\necho 'no Slurm in docs_test' >&2\nexit 1\n")
        os.chmod(squeue, stat.S_IRWXU)

    def as_spec(self, block):
        """The block as a SweepSpec text, or raises the parse errors of both readings."""
        try:
            self.text_format.Parse(block, self.pb.SweepSpec())
            return block
        except self.text_format.ParseError as as_spec:
            try:
                self.text_format.Parse(block, self.pb.RunConfig())
            except self.text_format.ParseError as as_config:
                raise ValueError(f"neither a SweepSpec ({as_spec}) nor a RunConfig ({as_config})")
            return "base {\n" + block + "\n}\n"

    def __call__(self, block):
        try:
            spec = self.as_spec(block)
        except ValueError as e:
            return str(e)
        with tempfile.TemporaryDirectory(dir=self.tmp) as work:
            path = os.path.join(work, "spec.pbtxt")
            with open(path, "w") as f:
                f.write(spec)
            env = dict(os.environ, PATH=self.no_slurm + os.pathsep + os.environ.get("PATH", ""))
            proc = subprocess.run([BINARIES["tempered-sweep"], "--spec", path, "--out_dir",
                                   os.path.join(work, "sweep"), "--backend", "slurm"],
                                  capture_output=True, text=True, timeout=60, env=env)
        if proc.returncode == 2 and "the slurm backend needs a reachable Slurm" in proc.stderr:
            return None
        return f"tempered-sweep refused it (exit {proc.returncode}): {(proc.stderr or proc.stdout).strip()[-500:]}"


def require_binaries():
    for path in BINARIES.values():
        if not os.access(path, os.X_OK):
            raise AssertionError(f"{path} is missing: build tempered-train, tempered-sweep and tempered-analyze "
                                 f"(TEMPERED_BIN={BIN})")


class LinksTest(unittest.TestCase):
    def test_every_relative_link_resolves(self):
        problems = [p for path in doc_files(SOURCE) for p in broken_links(path, SOURCE)]
        self.assertEqual(problems, [], "\n".join(problems))

    def test_nothing_refers_outside_the_repository(self):
        problems = [p for path in doc_files(SOURCE) for p in outside_references(path)]
        self.assertEqual(problems, [], "\n".join(problems))

    def test_readme_is_short(self):
        with open(os.path.join(SOURCE, "README.md")) as f:
            self.assertLessEqual(len(f.read().split("\n")), 125)


class BinariesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        require_binaries()
        cls.flags = {name: help_flags(path) for name, path in BINARIES.items()}
        cls.tmp = TempDir()
        cls.validate = Validator(cls.tmp.__enter__())

    @classmethod
    def tearDownClass(cls):
        cls.tmp.__exit__(None, None, None)

    def test_help_lists_flags(self):
        for name, flags in self.flags.items():
            self.assertIn("out_dir", flags, name)  # the parsing of --help works at all
        self.assertIn("tau", self.flags["tempered-train"])
        self.assertIn("spec", self.flags["tempered-sweep"])

    def test_every_flag_exists(self):
        docs = doc_files(SOURCE) + [os.path.join(SOURCE, "docker", "README.md")]
        problems = [p for path in docs for p in unknown_flags(path, self.flags)]
        self.assertEqual(problems, [], "\n".join(problems))

    def test_every_pbtxt_block_validates(self):
        paths = doc_files(SOURCE)
        self.assertGreaterEqual(sum(len(pbtxt_blocks(p)) for p in paths), 2, "the docs have pbtxt blocks")
        problems = [p for path in paths for p in invalid_pbtxt(path, self.validate)]
        self.assertEqual(problems, [], "\n".join(problems))


BROKEN = """# Broken

## A section

[a missing page](no_such_page.md), [a bad anchor](ok.md#no-such-heading), [outside](../../outside.md),
[good](ok.md#a-section-here), [self](#a-section), issue 12.

```sh
mpirun -np 2 build/trainer/tempered-train --threads 1 --no_such_flag 3 --out_dir x   # --ignored_comment
```

`tempered-sweep --spec s.pbtxt --not_a_sweep_flag`, `--another_missing`, `--resume`.

```pbtxt
epochs: 2
no_such_field: 1
```

```pbtxt
base { epochs: 2 }
tau: [0.1]
```
"""


class DetectsTest(unittest.TestCase):
    """The checks report what is broken: a deliberately broken markdown file fed to the same functions."""

    def write(self, tmp):
        os.makedirs(os.path.join(tmp, "repo", "docs"))
        path = os.path.join(tmp, "repo", "docs", "broken.md")
        with open(path, "w") as f:
            f.write(BROKEN)
        with open(os.path.join(tmp, "repo", "docs", "ok.md"), "w") as f:
            f.write("# OK\n\n## A section, here\n")
        return path

    def test_broken_links_and_outside_references(self):
        with TempDir() as tmp:
            path = self.write(tmp)
            problems = "\n".join(broken_links(path, os.path.join(tmp, "repo")))
            self.assertIn("no_such_page.md", problems)
            self.assertIn("#no-such-heading", problems)
            self.assertIn("leaves the repository", problems)
            self.assertNotIn("#a-section-here", problems)
            self.assertEqual(len(broken_links(path, os.path.join(tmp, "repo"))), 3, problems)
            self.assertEqual(len(outside_references(path)), 1)

    def test_unknown_flags(self):
        flags = {"tempered-train": {"threads", "out_dir", "resume"}, "tempered-sweep": {"spec", "out_dir"},
                 "tempered-analyze": set()}
        with TempDir() as tmp:
            problems = unknown_flags(self.write(tmp), flags)
        text = "\n".join(problems)
        self.assertIn("tempered-train has no flag --no_such_flag", text)
        self.assertIn("tempered-sweep has no flag --not_a_sweep_flag", text)
        self.assertIn("--another_missing", text)
        self.assertNotIn("ignored_comment", text)
        self.assertEqual(len(problems), 3, text)

    def test_unknown_flags_against_the_real_binaries(self):
        require_binaries()
        flags = {name: help_flags(path) for name, path in BINARIES.items()}
        with TempDir() as tmp:
            text = "\n".join(unknown_flags(self.write(tmp), flags))
        self.assertIn("--no_such_flag", text)
        self.assertIn("--not_a_sweep_flag", text)

    def test_invalid_pbtxt(self):
        require_binaries()
        with TempDir() as tmp:
            path = self.write(tmp)
            validate = Validator(os.path.join(tmp, "proto"))
            problems = invalid_pbtxt(path, validate)
        self.assertEqual(len(problems), 1, problems)
        self.assertIn("pbtxt block 1", problems[0])
        self.assertIn("no_such_field", problems[0])

    def test_invalid_value_is_refused_by_the_binary(self):
        require_binaries()
        with TempDir() as tmp:
            validate = Validator(os.path.join(tmp, "proto"))
            self.assertIsNone(validate("base { epochs: 2 }\ntau: [0.1]\n"))
            problem = validate("loss { tau: -1 }\n")  # a RunConfig that parses but is invalid
        self.assertIsNotNone(problem)
        self.assertIn("refused", problem)


if __name__ == "__main__":
    unittest.main()
