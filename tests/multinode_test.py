"""tempered-train under mpirun across two "hosts" on this machine, and world-size invariance across them.

Each host is a network namespace (its own interfaces and address on a veth pair) with its own UTS namespace (its own
hostname). mpirun runs on host a; Open MPI starts the daemon of host b through a remote-shell agent that does
`ip netns exec` where a cluster would ssh, then the ranks talk over TCP on the veth only (`--mca btl tcp,self`, no
shared memory). This is the recipe of docker/README.md with the network made of namespaces.

Namespaces need root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2's `ip`. Where they are not available (an unprivileged
container), the test falls back to one host: a hostfile with `localhost slots=2` and the TCP BTL over the
loopback, which still checks a hostfile launch without shared memory, but not ranks on different hosts.
"""
import functools
import json
import os
import re
import shutil
import subprocess
import unittest

from tempered_testing import MPI_ARGS, MPIRUN, TRAIN, TempDir, read_result, run_train

RUN = ["--norm", "none", "--seed", "7", "--batch_size", "64", "--max_steps", "3", "--train_subset", "640",
       "--test_subset", "256", "--linear_epochs", "0"]
SUBNET = "10.201.0.0/24"  # private to the two namespaces: it cannot clash with the machine's own networks
HOSTS = {"a": "10.201.0.1", "b": "10.201.0.2"}

# Open MPI's remote-shell agent, called like ssh: `agent HOST COMMAND...`. Like sshd, it hands the command line (a
# shell list such as `PATH=...; export PATH; ... orted ...`) to a shell, here in HOST's namespaces, with a clean
# environment as an ssh session has (mpirun forwards OMPI_* variables itself, others only with -x).
AGENT = """#!/bin/sh
host=$1; shift
echo "$host" >> {log}
case $host in
  {addr_a}) ns={ns_a} name=node-a ;;
  {addr_b}) ns={ns_b} name=node-b ;;
  *) echo "netns agent: unknown host $host" >&2; exit 1 ;;
esac
exec env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin ip netns exec "$ns" unshare --uts sh -c "hostname $name || exit 1; $*"
"""


def ip(*args):
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


class TwoHosts:
    """Two network namespaces joined by a veth pair, HOSTS["a"] and HOSTS["b"] on it; removed on exit."""

    def __init__(self):
        tag = f"tmn{os.getpid()}"  # unique per test process; interface names have at most 15 characters
        self.ns = {h: f"{tag}{h}" for h in HOSTS}
        self.dev = {h: f"{tag}v{h}" for h in HOSTS}

    def __enter__(self):
        try:
            ip("netns", "add", self.ns["a"])
            ip("netns", "add", self.ns["b"])
            ip("link", "add", self.dev["a"], "type", "veth", "peer", "name", self.dev["b"])
            for h, addr in HOSTS.items():
                ip("link", "set", self.dev[h], "netns", self.ns[h])
                ip("-n", self.ns[h], "addr", "add", f"{addr}/24", "dev", self.dev[h])
                ip("-n", self.ns[h], "link", "set", "lo", "up")
                ip("-n", self.ns[h], "link", "set", self.dev[h], "up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        for ns in self.ns.values():  # deleting a namespace deletes its end of the veth, and so the pair
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True, timeout=30)

    def rx_bytes(self, h):
        out = subprocess.run(["ip", "-n", self.ns[h], "-j", "-s", "link", "show", "dev", self.dev[h]],
                             check=True, capture_output=True, text=True, timeout=30).stdout
        return json.loads(out)[0]["stats64"]["rx"]["bytes"]


@functools.lru_cache(maxsize=None)
def namespaces_available():
    """Whether this process may create network namespaces (root with CAP_SYS_ADMIN, iproute2 installed)."""
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("unshare"):
        return False
    probe = f"tmn{os.getpid()}probe"
    if subprocess.run(["ip", "netns", "add", probe], capture_output=True, timeout=30).returncode != 0:
        return False
    subprocess.run(["ip", "netns", "delete", probe], capture_output=True, timeout=30)
    return True


def train_env():
    return dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")


class MultiNodeTest(unittest.TestCase):
    def assert_same_losses(self, tmp, result):
        """The run's step losses equal those of one process with the same global batch (docs/architecture.md's invariant)."""
        single = os.path.join(tmp, "np1")
        proc = run_train(1, RUN + ["--out_dir", single])
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        ref = [s["loss"] for s in read_result(single)["step_loss"]]
        losses = [s["loss"] for s in result["step_loss"]]
        self.assertEqual(len(ref), 3)
        self.assertEqual(len(losses), 3)
        for step, (a, b) in enumerate(zip(ref, losses), 1):
            self.assertLessEqual(abs(a - b), 1e-4 * abs(a), f"step {step}: 1 process {a}, 2 hosts {b}")

    @unittest.skipUnless(namespaces_available(), "cannot create network namespaces here (needs root and iproute2)")
    def test_two_hosts_in_network_namespaces(self):
        with TempDir() as tmp, TwoHosts() as hosts:
            agent, log = os.path.join(tmp, "netns-agent.sh"), os.path.join(tmp, "agent.log")
            with open(agent, "w") as f:
                f.write(AGENT.format(log=log, addr_a=HOSTS["a"], addr_b=HOSTS["b"], ns_a=hosts.ns["a"],
                                     ns_b=hosts.ns["b"]))
            os.chmod(agent, 0o755)
            hostfile = os.path.join(tmp, "hostfile")
            with open(hostfile, "w") as f:
                f.write(f"{HOSTS['a']} slots=1\n{HOSTS['b']} slots=1\n")
            out = os.path.join(tmp, "np2")
            mpirun = [MPIRUN, *MPI_ARGS, "--hostfile", hostfile, "-np", "2", "--display-map",
                      # Both "hosts" see every core as theirs: without this both ranks would bind to core 0.
                      "--bind-to", "none",
                      "--mca", "plm_rsh_agent", agent,
                      "--mca", "btl", "tcp,self", "--mca", "btl_tcp_if_include", SUBNET,
                      "--mca", "oob_tcp_if_include", SUBNET,
                      "-x", "OMP_NUM_THREADS", "-x", "OPENBLAS_NUM_THREADS",
                      TRAIN, "--threads", "1", *RUN, "--out_dir", out]
            host_a = ["ip", "netns", "exec", hosts.ns["a"], "unshare", "--uts",
                      "sh", "-c", 'hostname node-a && exec "$@"', "sh"]
            proc = subprocess.run(host_a + mpirun, capture_output=True, text=True, timeout=300, env=train_env())
            self.assertEqual(proc.returncode, 0, proc.stdout[-2000:] + proc.stderr[-3000:])

            # Rank 0 ran on host a (mpirun's), rank 1 on host b, whose daemon was started through the agent.
            # (--display-map's map is printed by each daemon.)
            placement = set(re.findall(r"Data for node: (\S+)\s.*\n.*Process rank: (\d+)", proc.stdout))
            self.assertEqual(placement, {("node-a", "0"), (HOSTS["b"], "1")}, proc.stdout)
            with open(log) as f:
                self.assertEqual(f.read().split(), [HOSTS["b"]])
            # The ranks' traffic crossed the veth: the embeddings gathered and the gradients reduced, > 100 kB.
            self.assertGreater(hosts.rx_bytes("b"), 100_000)

            result = read_result(out)
            self.assertEqual(result["world_size"], 2)
            self.assertEqual(result["status"], "FINISHED")
            self.assert_same_losses(tmp, result)

    @unittest.skipIf(namespaces_available(), "network namespaces are available: the two-host test runs instead")
    def test_hostfile_localhost_tcp_only(self):
        with TempDir() as tmp:
            hostfile = os.path.join(tmp, "hostfile")
            with open(hostfile, "w") as f:
                f.write("localhost slots=2\n")
            out = os.path.join(tmp, "np2")
            # The TCP BTL skips the loopback by default, and a build sandbox may have no other interface.
            cmd = [MPIRUN, *MPI_ARGS, "--hostfile", hostfile, "-np", "2", "--mca", "btl", "tcp,self",
                   "--mca", "btl_tcp_if_include", "lo", TRAIN, "--threads", "1", *RUN, "--out_dir", out]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=train_env())
            self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
            result = read_result(out)
            self.assertEqual(result["world_size"], 2)
            self.assert_same_losses(tmp, result)


if __name__ == "__main__":
    unittest.main()
