"""End-to-end test of tempered-sweep's Slurm backend against a real Slurm: the test starts munged, slurmctld and
slurmd on localhost in a temporary directory (its own munge socket and Slurm ports, so it disturbs no other Slurm
or munge on the machine) and stops exactly the daemons it started, by their pid files.

The tiny sweep (2 losses x 2 temperatures) goes through sbatch; one run's first attempt fails for real (the
trainer is handed a data directory that does not exist) and is retried; a SIGTERM to the coordinator scancels the
jobs, and the same command resumes the sweep to the end.
Run from tests/ with TEMPERED_BIN=<build dir>: /usr/bin/python3 -m unittest -v sweep_slurm_test
"""
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import time
import unittest

from sweep_support import SWEEP, SweepFixture, wait_until

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
GresTypes=gpu
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
NodeName=localhost NodeAddr=127.0.0.1 CPUs=2 RealMemory=2000 Gres=gpu:2 Features=tempered State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""

# Two GPU runs (one GPU each; device stays cpu) of 144 steps, about 30 s each on a core, under a 1-minute time limit
# whose SIGTERM comes 40 s before it, submitted held; max_attempts 1.
GPU_SPEC = """
base {
  data { train_subset: 1024 test_subset: 512 }
  epochs: 18
  batch_size: 128
  checkpoint_every_steps: 4
  eval { metric_samples: 256 knn_k: 20 linear_epochs: 2 }
  log_every_steps: 1
}
loss: ["infonce"]
tau: [0.1, 0.5]
max_attempts: 1
backend: SLURM
slurm {
  time_limit: "00:01:00"
  signal_grace_seconds: 40
  gpus_per_task: 1
  nodes: 1
  ntasks_per_node: 1
  account: "vision"
  qos: "normal"
  constraint: "tempered"
  extra_args: ["--hold"]
}
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
        self.make_gpus()
        m = os.path.join(d, "munge")
        self.daemon(["runuser", "-u", "munge", "--", "/usr/sbin/munged", "--socket=%s/munge.socket" % m,
                     "--pid-file=%s/munged.pid" % m, "--log-file=%s/munged.log" % m,
                     "--seed-file=%s/munged.seed" % m], os.path.join(m, "munged.pid"))
        self.ctld_started = time.time()
        self.daemon(["/usr/sbin/slurmctld"], os.path.join(d, "slurmctld.pid"))
        self.daemon(["/usr/sbin/slurmd", "-N", "localhost"], os.path.join(d, "slurmd.pid"))
        wait_until(lambda: self.sinfo() == "idle", 60, "the Slurm node to be idle (logs in %s)" % d)

    def make_gpus(self):
        """Two stand-in GPUs for Slurm's GRES: character devices with NVIDIA's major number (195), which slurmd
        only checks for existence; it then hands each job its own and sets CUDA_VISIBLE_DEVICES, as on a GPU node."""
        dev = os.path.join(self.d, "dev")
        os.makedirs(dev)
        for i in range(2):
            os.mknod(os.path.join(dev, "nvidia%d" % i), 0o600 | stat.S_IFCHR, os.makedev(195, i))
        with open(os.path.join(self.d, "gres.conf"), "w") as f:
            f.write("Name=gpu File=%s/nvidia[0-1]\n" % dev)

    def daemon(self, argv, pid_file):
        subprocess.run(argv, env=self.env, check=True, timeout=30)
        self.pid_files.append(pid_file)
        wait_until(lambda: pid_alive(pid_file), 30, argv[-1] + "'s pid file")

    def sinfo(self):
        r = subprocess.run(["sinfo", "-h", "-o", "%T"], env=self.env, capture_output=True, text=True)
        return r.stdout.strip()

    def held_jobs(self):
        r = subprocess.run(["squeue", "-h", "-t", "PENDING", "-o", "%i %r"], env=self.env, capture_output=True,
                           text=True, check=True)
        return [line.split()[0] for line in r.stdout.splitlines() if line.split()[1:] == ["JobHeldUser"]]

    def release(self, job_ids):
        if job_ids:
            subprocess.run(["scontrol", "release", ",".join(job_ids)], env=self.env, check=True, timeout=30)

    def wait_for_time_limit_phase(self, seconds_before_check):
        """Waits until slurmctld's next time-limit check is `seconds_before_check` away. slurmctld checks time limits
        (and sends the --signal warnings) every 30 s from its start (slurmctld/controller.c, PERIODIC_TIMEOUT), and
        a warning whose time lies within the next 30 s goes out at the check before it (measured on 22.05)."""
        phase = (time.time() - self.ctld_started) % 30
        time.sleep((30 - seconds_before_check - phase) % 30)

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

    def test_gpu_sweep_held_then_stopped_by_its_time_limit_resumes_without_spending_an_attempt(self):
        with open(self.f.spec, "w") as f:
            f.write(GPU_SPEC)
        coordinator = self.f.start(env=self.slurm.env)
        # (c) Submitted held (extra_args --hold): the coordinator says so in its log and --status shows it.
        log = wait_until(lambda: self.log().count(": held: it starts once released") >= 2 and self.log(), 60,
                         "the coordinator to log both held jobs")
        self.assertRegex(log, r"Slurm job (\d+) of infonce_tau0.1_\w+ is PENDING \(JobHeldUser\): held: it starts "
                              r"once released \(scontrol release \1\)")
        status = subprocess.run([SWEEP, "--status", self.f.out_dir], capture_output=True, text=True, timeout=30)
        self.assertEqual(status.returncode, 0, status.stderr)
        self.assertEqual(status.stdout.count("slurm PENDING (JobHeldUser)"), 2, status.stdout)
        self.assertRegex(status.stdout, r"waiting on someone.*\nSlurm job \d+ of infonce_tau0.\d_\w+ is PENDING "
                                        r"\(JobHeldUser\): held: it starts once released \(scontrol release \d+\)")
        # (b) Released 12 s before slurmctld's next time-limit check: the 1-minute limit's warning (grace 40 s, due at
        # once) then reaches each job about 12 s into training, long before its 144 steps are done.
        self.slurm.wait_for_time_limit_phase(12)
        while coordinator.poll() is None:  # every attempt is submitted held; release each as it comes
            self.slurm.release(self.slurm.held_jobs())
            time.sleep(0.2)
        self.assertEqual(coordinator.returncode, 0, self.log())
        log = self.log()
        for run in self.f.runs():
            name = os.path.basename(run["run_dir"])
            self.assertEqual(run["state"], "FINISHED", run)
            self.assertEqual(self.f.result(run)["status"], "FINISHED", name)
            # Stopped by the time limit's SIGTERM after its checkpoint moved on, at least once, and relaunched free:
            # max_attempts is 1.
            self.assertGreaterEqual(run["attempts"], 2, name)
            self.assertRegex(log, r"attempt 1 of %s: Slurm job \d+ FAILED \(the run checkpointed and stopped\) after "
                                  r"global step 0 to [1-9]\d*: stopped from outside after progress, resuming from its "
                                  r"checkpoint \(not counted toward max_attempts\)" % name)
            with open(os.path.join(self.f.out_dir, run["run_dir"], "attempt-1.result.json")) as f:
                self.assertEqual(json.load(f)["status"], "INTERRUPTED", name)
            with open(os.path.join(self.f.out_dir, run["run_dir"], "attempt-2.err")) as f:
                self.assertRegex(f.read(), r"resumed from .*checkpoint.pt at global step [1-9]", name)
        self.assertNotIn("FAILED infonce", log)
        # (a) Every start of every run saw the GPU Slurm gave its job; the two first attempts ran at once, on two.
        starts = self.f.starts()
        self.assertGreaterEqual(len(starts), 4)
        for start in starts:
            self.assertIn(start["cuda_visible_devices"], ("0", "1"), start)
        first = {s["run"]: s["cuda_visible_devices"] for s in reversed(starts)}
        self.assertEqual(sorted(first.values()), ["0", "1"], starts)

    def log(self):
        try:
            with open(os.path.join(self.f.out_dir, "sweep.log")) as f:
                return f.read()
        except OSError:
            return ""


if __name__ == "__main__":
    unittest.main()
