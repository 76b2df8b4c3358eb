"""docker/Dockerfile built by a real Docker engine, and the commands of docker/README.md run in its containers.

Slow (the build compiles Tempered inside the image: 6-22 minutes on 2 cores when nothing is cached, by load; ~20 s
when it is), so ctest labels it `docker`, not `e2e`, and the default tests/run.sh leaves it out. Run it alone with
`tests/run.sh -L docker` (which also installs docker.io and debootstrap: docker/install-deps.sh --docker), or from
tests/ as root: /usr/bin/python3 -m unittest -v docker_test

- Engine: the one that answers `docker info`; else the test starts `dockerd` (root) and stops that one at the end.
- Base image: no registry needs to be reachable: when the engine has no debian:bookworm, the test makes it with
  debootstrap from this machine's apt mirror and `docker import`s it.
- The image is kept as TAG, so that a rerun's build takes its layers from the cache; the containers, networks and
  volumes the test makes are removed, also when it fails.
"""
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

from tempered_testing import SOURCE, TempDir

TAG = "tempered:docker-test"
BASE = "debian:bookworm"
PREFIX = f"tempered-test-{os.getpid()}"  # names of what the test makes: unique, so a user's own are never touched
# The run of multinode_test.py: no batch norm (whose statistics are per rank), so every world size computes the same
# steps for the same global batch, and 1 process is the reference for 2.
RUN = ["--norm", "none", "--seed", "7", "--batch_size", "64", "--max_steps", "3", "--train_subset", "640",
       "--test_subset", "256", "--linear_epochs", "0"]
# Two runs of a few steps on small subsets: seconds each; linear_epochs 1 so the report has every column.
TINY_SWEEP = """
base {
  data { train_subset: 256 test_subset: 128 }
  max_steps: 3
  batch_size: 64
  eval { metric_samples: 128 knn_k: 20 linear_epochs: 1 }
}
tau: [0.1, 0.5]
"""


def log(message):
    print(f"docker_test: {message}", file=sys.stderr, flush=True)


def docker(*args, timeout=300, check=True, **kwargs):
    """Runs `docker ARGS`; with check, a non-zero exit fails the test with the command and its output's tail."""
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"`docker {' '.join(args)}` exited {proc.returncode}:\n"
                             f"{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return proc


def engine_answers():
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


def start_engine(log_path):
    """Starts dockerd (no systemd here) and waits until it answers; returns its Popen."""
    if not shutil.which("dockerd") or not shutil.which("docker"):
        raise AssertionError("no Docker engine is installed: run docker/install-deps.sh --docker "
                             "(tests/run.sh -L docker does)")
    with open(log_path, "w") as out:
        proc = subprocess.Popen(["dockerd"], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if engine_answers():
            return proc
        time.sleep(1)
    stop_engine(proc)
    with open(log_path) as f:
        raise AssertionError(f"dockerd did not answer `docker info` within 60 s; its log ends:\n{f.read()[-3000:]}")


def stop_engine(proc):
    """Stops the dockerd this test started (SIGTERM: it stops its containers and cleans up), by its own pid."""
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)


def apt_mirror():
    """The URL of this machine's Debian archive for bookworm itself (not -security or -updates)."""
    sources = "/etc/apt/sources.list.d/debian.sources"
    if os.path.exists(sources):  # deb822 stanzas separated by blank lines
        with open(sources) as f:
            for stanza in f.read().split("\n\n"):
                fields = dict(line.split(":", 1) for line in stanza.splitlines()
                              if ":" in line and not line.startswith("#"))
                if "bookworm" in fields.get("Suites", "").split() and "URIs" in fields:
                    return fields["URIs"].split()[0]
    if os.path.exists("/etc/apt/sources.list"):
        with open("/etc/apt/sources.list") as f:
            for line in f:
                words = line.split()
                if len(words) >= 3 and words[0] == "deb" and "bookworm" in words:
                    return next(w for w in words[1:] if "://" in w)
    raise AssertionError("no bookworm mirror in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list: "
                         f"cannot make {BASE} with debootstrap")


def ensure_base_image():
    """Makes debian:bookworm with debootstrap when the engine has none (no registry to pull it from); ~1 minute."""
    if docker("image", "inspect", BASE, check=False).returncode == 0:
        return
    if not shutil.which("debootstrap"):
        raise AssertionError(f"the engine has no {BASE} and debootstrap is missing: run docker/install-deps.sh "
                             "--docker")
    mirror = apt_mirror()
    log(f"making {BASE} with debootstrap from {mirror}")
    with TempDir() as tmp:
        root = os.path.join(tmp, "rootfs")
        proc = subprocess.run(["debootstrap", "--variant=minbase", "bookworm", root, mirror],
                              capture_output=True, text=True, timeout=1200)
        if proc.returncode != 0:
            raise AssertionError(f"debootstrap of bookworm from {mirror} failed:\n{proc.stdout[-3000:]}"
                                 f"{proc.stderr[-3000:]}")
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        imported = docker("import", "-", BASE, stdin=tar.stdout, timeout=600, check=False)
        tar.stdout.close()
        if tar.wait(timeout=60) != 0 or imported.returncode != 0:
            raise AssertionError(f"`tar -C {root} -c . | docker import - {BASE}` failed: {imported.stderr[-2000:]}")


def image_id(name):
    proc = docker("image", "inspect", "-f", "{{.Id}}", name, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def build_image(log_path):
    """docker build of docker/Dockerfile from the repository root; returns (seconds, cached steps, steps)."""
    previous = image_id(TAG)
    start = time.monotonic()
    with open(log_path, "w") as out:
        proc = subprocess.run(["docker", "build", "-f", "docker/Dockerfile", "-t", TAG, "."], cwd=SOURCE,
                              stdout=out, stderr=subprocess.STDOUT, text=True, timeout=3600)
    seconds = time.monotonic() - start
    with open(log_path) as f:
        output = f.read()
    if proc.returncode != 0:
        raise AssertionError(f"docker build of docker/Dockerfile failed ({seconds:.0f} s); its output ends:\n"
                             f"{output[-4000:]}")
    # The image this build replaced lost its tag: without this, every rerun after an edit would leave ~1 GB behind.
    if previous and previous != image_id(TAG):
        docker("rmi", previous, check=False)
    # The legacy builder (the only one without the buildx plugin) prints "Step i/n" and "Using cache" per step.
    return seconds, output.count("---> Using cache"), output.count("\nStep ")


def result_of(out_dir):
    with open(os.path.join(out_dir, "result.json")) as f:
        return json.load(f)


def step_losses(result):
    return [s["loss"] for s in result["step_loss"]]


class Scratch:
    """A host directory that containers bind-mount at /runs. Their root writes files the test (root) can remove."""

    def __init__(self, test):
        self.path = tempfile.mkdtemp(prefix="tempered-docker-test-")
        test.addCleanup(shutil.rmtree, self.path, True)


def setUpModule():
    if not engine_answers():
        if os.geteuid() != 0:
            raise unittest.SkipTest("no Docker engine answers `docker info` and starting dockerd needs root")
        engine_log = tempfile.NamedTemporaryFile(prefix="tempered-dockerd-", suffix=".log", delete=False).name
        log(f"starting dockerd (log {engine_log})")
        unittest.addModuleCleanup(os.remove, engine_log)  # cleanups run last-added first: after dockerd stopped
        unittest.addModuleCleanup(stop_engine, start_engine(engine_log))
    ensure_base_image()


class DockerImageTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.logs = tempfile.mkdtemp(prefix="tempered-docker-build-")
        seconds, cached, steps = build_image(os.path.join(cls.logs, "build.log"))
        size = int(docker("image", "inspect", "-f", "{{.Size}}", TAG).stdout)
        log(f"built {TAG} in {seconds:.0f} s ({cached} of {steps} steps from the cache); image size "
            f"{size / 1e9:.2f} GB (build log {cls.logs}/build.log)")
        cls._reference = None

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.logs, ignore_errors=True)  # kept only when the build fails (setUpClass raises)

    def reference_losses(self):
        """The step losses of one process with RUN, in a container of the image (computed once)."""
        if self.__class__._reference is None:
            scratch = Scratch(self)
            proc = docker("run", "--rm", "-v", f"{scratch.path}:/runs", TAG,
                          "tempered-train", "--threads", "1", *RUN, "--out_dir", "/runs/np1")
            result = result_of(os.path.join(scratch.path, "np1"))
            self.assertEqual(result["status"], "FINISHED", proc.stderr[-2000:])
            self.__class__._reference = step_losses(result)
            log(f"1 process: step losses {self._reference}")
        return self._reference

    def assert_same_losses(self, losses, what):
        ref = self.reference_losses()
        self.assertEqual(len(losses), len(ref), f"{what}: {losses} against 1 process's {ref}")
        for step, (a, b) in enumerate(zip(ref, losses), 1):
            self.assertTrue(math.isfinite(b), f"{what}: step {step} loss {b}")
            self.assertLessEqual(abs(a - b), 1e-4 * abs(a), f"step {step}: 1 process {a}, {what} {b}")
        log(f"{what}: step losses {losses}")

    def test_two_ranks_in_one_container(self):
        """The README's `docker run ... mpirun -np 2 tempered-train`, its out_dir on a bind-mounted host dir."""
        scratch = Scratch(self)
        proc = docker("run", "--rm", "-v", f"{scratch.path}:/runs", TAG,
                      "mpirun", "-np", "2", "tempered-train", *RUN, "--out_dir", "/runs/demo")
        result = result_of(os.path.join(scratch.path, "demo"))
        self.assertEqual(result["status"], "FINISHED", proc.stderr[-3000:])
        self.assertEqual(result["world_size"], 2)
        self.assertEqual([r["rank"] for r in result["environment"]["ranks"]], [0, 1])
        self.assert_same_losses(step_losses(result), "2 ranks in one container")

    def test_sweep_report_on_the_host(self):
        """tempered-sweep in a container writes its report into a host directory."""
        scratch = Scratch(self)
        with open(os.path.join(scratch.path, "tiny.pbtxt"), "w") as f:
            f.write(TINY_SWEEP)
        proc = docker("run", "--rm", "-v", f"{scratch.path}:/runs", TAG,
                      "tempered-sweep", "--spec", "/runs/tiny.pbtxt", "--out_dir", "/runs/sweep", timeout=600)
        self.assertTrue(proc.stdout.rstrip().endswith("report: /runs/sweep/report.md"), proc.stdout[-2000:])
        with open(os.path.join(scratch.path, "sweep", "report.md")) as f:
            report = f.read()
        self.assertIn("| metric | τ=0.1 | τ=0.5 |", report)
        with open(os.path.join(scratch.path, "sweep", "plots", "accuracy_vs_tau.png"), "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n", "the sweep's plot is not a PNG (gnuplot)")

    def make(self, kind, name):
        """docker KIND create NAME, removed at the end of the test (cleanups run last-made first)."""
        docker(kind, "create", name)
        self.addCleanup(docker, kind, "rm", name, check=False)

    def start_node(self, name, net, ssh, runs):
        """One container of the recipe: the image's sshd in the foreground, each with its own host keys."""
        self.addCleanup(docker, "rm", "-f", name, check=False)  # before the run: a half-started one goes too
        docker("run", "-d", "--name", name, "--hostname", name, "--network", net, "--shm-size", "1g",
               "-v", f"{ssh}:/root/.ssh", "-v", f"{runs}:/runs", TAG,
               "sh", "-c", "ssh-keygen -A && exec /usr/sbin/sshd -D -e")

    def wait_for_ssh(self, src, dst, timeout=60):
        deadline = time.monotonic() + timeout
        while True:
            proc = docker("exec", src, "ssh", "-o", "BatchMode=yes", dst, "true", check=False, timeout=30)
            if proc.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"ssh from {src} to {dst} failed for {timeout} s: {proc.stderr[-2000:]}")
            time.sleep(1)

    def rx_bytes(self, node):
        return int(docker("exec", node, "cat", "/sys/class/net/eth0/statistics/rx_bytes").stdout)

    def test_one_mpirun_across_two_containers(self):
        """docker/README.md's "One mpirun across several containers", on one Docker host, as written there."""
        net, ssh, runs = f"{PREFIX}-net", f"{PREFIX}-ssh", f"{PREFIX}-runs"
        node1, node2 = f"{PREFIX}-node1", f"{PREFIX}-node2"
        self.make("network", net)
        self.make("volume", ssh)
        self.make("volume", runs)
        docker("run", "--rm", "-v", f"{ssh}:/root/.ssh", TAG, "sh", "-c",
               'ssh-keygen -q -t ed25519 -N "" -f /root/.ssh/id_ed25519 '
               "&& cp /root/.ssh/id_ed25519.pub /root/.ssh/authorized_keys")
        for node in (node1, node2):
            self.start_node(node, net, ssh, runs)
        docker("exec", node1, "sh", "-c", f'printf "{node1} slots=1\\n{node2} slots=1\\n" > /runs/hostfile')
        self.wait_for_ssh(node1, node2)  # sshd is up once its host keys are made

        rx_before = self.rx_bytes(node2)
        proc = docker("exec", node1, "mpirun", "-np", "2", "--hostfile", "/runs/hostfile",
                      "--mca", "btl", "tcp,self", "--mca", "btl_tcp_if_include", "eth0",
                      "--mca", "oob_tcp_if_include", "eth0", "-x", "OMP_NUM_THREADS=2",
                      "/opt/tempered/build/trainer/tempered-train", *RUN, "--out_dir", "/runs/demo")
        # The ranks' traffic crossed the user-defined network: embeddings gathered, gradients reduced, > 100 kB.
        received = self.rx_bytes(node2) - rx_before
        self.assertGreater(received, 100_000)

        result = json.loads(docker("exec", node1, "cat", "/runs/demo/result.json").stdout)
        self.assertEqual(result["status"], "FINISHED", proc.stderr[-3000:])
        self.assertEqual(result["world_size"], 2)
        hosts = {r["rank"]: r["host"] for r in result["environment"]["ranks"]}
        self.assertEqual(hosts, {0: node1, 1: node2})
        log(f"2 containers: rank hosts {hosts}, {received} bytes received by {node2}'s eth0")
        self.assert_same_losses(step_losses(result), "2 ranks in 2 containers")


if __name__ == "__main__":
    unittest.main()
