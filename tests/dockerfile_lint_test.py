"""Lints docker/Dockerfile and docker/Dockerfile.cuda with npm's dockerfilelint (no Docker engine needed), so that
every test suite, CI's included, checks them. dockerfilelint's exit code is its number of problems. npx fetches the
pinned version from the npm registry the first time and runs it from npm's cache after that."""
import os
import shutil
import subprocess
import unittest

from tempered_testing import SOURCE

DOCKERFILES = ["docker/Dockerfile", "docker/Dockerfile.cuda"]
LINTER = "dockerfilelint@1.8.0"  # pinned: a new release may add rules


@unittest.skipUnless(shutil.which("npx"), "npx (Node.js's npm) is not installed here: the Dockerfiles are not linted")
class DockerfileLintTest(unittest.TestCase):
    def lint(self, *args):
        return subprocess.run(["npx", "--yes", LINTER, *args], cwd=SOURCE, capture_output=True, text=True,
                              timeout=300)

    def test_dockerfiles_have_no_problems(self):
        for path in DOCKERFILES:  # the linter reads an argument that is not a file as Dockerfile text
            self.assertTrue(os.path.isfile(os.path.join(SOURCE, path)), path)
        proc = self.lint(*DOCKERFILES)
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        self.assertEqual(proc.stdout.count("Issues: None found"), len(DOCKERFILES), proc.stdout)

    def test_linter_finds_a_problem(self):
        # A known problem (no tag on the base image), so that a linter that checks nothing cannot pass the above.
        proc = self.lint("FROM debian")
        self.assertEqual(proc.returncode, 1, proc.stdout + proc.stderr)


if __name__ == "__main__":
    unittest.main()
