"""End-to-end test of tempered-sweep's Slurm backend against a real Slurm: the test starts munged, slurmctld and
slurmd on localhost in a temporary directory (its own munge socket and Slurm ports, so it disturbs no other Slurm
or munge on the machine) and stops exactly the daemons it started, by their pid files.

The tiny sweep (2 losses x 2 temperatures) goes through sbatch; one run's first attempt fails for real (the
trainer is handed a data directory that does not exist) and is retried; a SIGTERM to the coordinator scancels the
jobs, and the same command resumes the sweep to the end.
Run from tests/ with TEMPERED_BIN=<build dir>: /usr/bin/python3 -m unittest -v sweep_slurm_test
"""
import os
import shutil
import signal
import socket
import subprocess
import time
import unittest

from sweep_support import SweepFixture, wait_until

DAEMONS = ["/usr/sbin/munged", "/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/bin/sbatch", "/usr/bin/squeue"]

SLURM_CONF = """ClusterName=tempered-test
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket={d}/munge/munge.socket
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={d}/jobcomp.log
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=batch_sched_delay=0,sched_min_interval=100000
MinJobAge=600
ReturnToService=2
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
NodeName=localhost NodeAddr=127.0.0.1 CPUs=2 RealMemory=2000 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pid_alive(pid_file):
    try:
        with open(pid_file) as f:
            pid = int(f.read().strip())
        with open("/proc/%d/stat" % pid) as f:
            return pid if f.read().rsplit(")", 1)[1].split()[0] != "Z" else None
    except (OSError, ValueError, IndexError):
        return None


class LocalSlurm:
    """munged + slurmctld + slurmd on localhost, everything under `d`."""

    def __init__(self, d):
        self.d = d
        self.env = dict(os.environ, SLURM_CONF=os.path.join(d, "slurm.conf"))
        self.pid_files = []

    def start(self):
        d = self.d
        for sub in ("state", "spool", "munge"):
            os.makedirs(os.path.join(d, sub))
        for path in (os.path.dirname(d), d):  # munged needs every directory above its socket searchable
            os.chmod(path, 0o755)
        shutil.chown(os.path.join(d, "munge"), "munge", "munge")
        with open(self.env["SLURM_CONF"], "w") as f:
            f.write(SLURM_CONF.format(d=d, ctld_port=free_port(), slurmd_port=free_port()))
        m = os.path.join(d, "munge")
        self.daemon(["runuser", "-u", "munge", "--", "/usr/sbin/munged", "--socket=%s/munge.socket" % m,
                     "--pid-file=%s/munged.pid" % m, "--log-file=%s/munged.log" % m,
                     "--seed-file=%s/munged.seed" % m], os.path.join(m, "munged.pid"))
        self.daemon(["/usr/sbin/slurmctld"], os.path.join(d, "slurmctld.pid"))
        self.daemon(["/usr/sbin/slurmd", "-N", "localhost"], os.path.join(d, "slurmd.pid"))
        wait_until(lambda: self.sinfo() == "idle", 60, "the Slurm node to be idle (logs in %s)" % d)

    def daemon(self, argv, pid_file):
        subprocess.run(argv, env=self.env, check=True, timeout=30)
        self.pid_files.append(pid_file)
        wait_until(lambda: pid_alive(pid_file), 30, argv[-1] + "'s pid file")

    def sinfo(self):
        r = subprocess.run(["sinfo", "-h", "-o", "%T"], env=self.env, capture_output=True, text=True)
        return r.stdout.strip()

    def job_states(self):
        r = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i %T"], env=self.env, capture_output=True,
                           text=True, check=True)
        return dict(line.split() for line in r.stdout.splitlines())

    def stop(self):
        """Stops the daemons this object started, by their pid files: Slurm first (it uses munge)."""
        subprocess.run(["scontrol", "shutdown"], env=self.env, capture_output=True, timeout=30)
        for pid_file in reversed(self.pid_files):
            if pid_file.endswith("munged.pid") and pid_alive(pid_file):
                os.kill(pid_alive(pid_file), signal.SIGTERM)
            deadline = time.monotonic() + 15
            while pid_alive(pid_file) and time.monotonic() < deadline:
                time.sleep(0.2)
            if pid_alive(pid_file):
                os.kill(pid_alive(pid_file), signal.SIGKILL)


@unittest.skipUnless(all(os.access(p, os.X_OK) for p in DAEMONS),
                     "Slurm or munge is not installed (docker/install-deps.sh installs slurm-wlm and munge)")
class SlurmSweepTest(unittest.TestCase):
    def setUp(self):
        self.f = SweepFixture(fail_once="hard_tau0.5_")
        self.addCleanup(self.f.cleanup)
        self.slurm = LocalSlurm(os.path.join(self.f.root, "slurm"))
        self.addCleanup(self.f.kill_leftovers)
        self.addCleanup(self.slurm.stop)
        self.slurm.start()

    def test_sweep_through_sbatch_retries_a_failed_run_and_resumes_after_sigterm(self):
        # SIGTERM while jobs run: the coordinator scancels them and exits; nothing is left queued or running.
        coordinator = self.f.start("--backend", "slurm", env=self.slurm.env)
        wait_until(lambda: sum(self.f.progress_step(r) >= 2 for r in self.f.runs()) >= 1, 120, "a job in progress")
        coordinator.send_signal(signal.SIGTERM)
        self.assertEqual(coordinator.wait(timeout=90), 128 + signal.SIGTERM)
        states = self.slurm.job_states()
        self.assertIn("CANCELLED", states.values())
        self.assertEqual([s for s in states.values() if s in ("PENDING", "RUNNING", "COMPLETING")], [], states)
        self.assertNotIn("RUNNING", [r["state"] for r in self.f.runs()])

        r = self.f.run("--backend", "slurm", env=self.slurm.env)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        runs = {os.path.basename(run["run_dir"]).rsplit("_", 1)[0]: run for run in self.f.runs()}
        self.assertEqual(sorted(runs), ["hard_tau0.1", "hard_tau0.5", "infonce_tau0.1", "infonce_tau0.5"])
        for name, run in runs.items():
            self.assertEqual(run["state"], "FINISHED", run)
            self.assertEqual(self.f.result(run)["status"], "FINISHED", name)
            self.assertEqual(len([s for s in self.f.starts() if s["run"] == os.path.basename(run["run_dir"])]),
                             run["attempts"], name)
        # The forced failure happened once, in its own sbatch job, and the retry finished the run.
        forced = [s for s in self.f.starts() if s.get("forced_failure")]
        self.assertEqual([s["run"].rsplit("_", 1)[0] for s in forced], ["hard_tau0.5"])
        with open(os.path.join(self.f.out_dir, "sweep.log")) as f:
            log = f.read()
        self.assertRegex(log, r"attempt \d of hard_tau0.5_\w+: Slurm job \d+ FAILED: .*nonexistent.*; retrying")
        self.assertEqual(self.f.starts()[-1]["concurrent"], 0)
        self.assertEqual([s for s in self.f.starts() if s["status_before"] == "FINISHED"], [])
        states = self.slurm.job_states()
        self.assertIn("FAILED", states.values())
        self.assertGreaterEqual(list(states.values()).count("COMPLETED"), 4)
        self.assertTrue(os.path.exists(os.path.join(self.f.out_dir, "report.md")))


if __name__ == "__main__":
    unittest.main()
