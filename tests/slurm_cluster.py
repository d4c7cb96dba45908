"""A throwaway one-node Slurm cluster on localhost for tests (Debian's slurmctld/slurmd/munge, no systemd).

Everything lives in one temporary directory: a fresh munge key and socket (munged runs as user ``munge``),
slurm.conf with free ports, state/spool/log files. The daemons run in the foreground as children of the test,
so they are stopped by PID (``stop``); nothing in /etc or /run is touched. Clients (sbatch, squeue, scancel,
and the Snakemake Slurm plugin, which calls them) find the cluster through ``SLURM_CONF`` (see ``env``).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "scancel", "scontrol", "sinfo")
APT_PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]


def missing_binaries() -> list[str]:
    found = {name: shutil.which(name) or (Path("/usr/sbin") / name).exists() for name in DAEMONS}
    return [name for name, ok in found.items() if not ok]


def _binary(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin") / name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_line() -> str:
    """CPUs and memory as slurmd detects them (a node configured larger than it is would be drained)."""
    out = subprocess.run([_binary("slurmd"), "-C"], capture_output=True, text=True, timeout=60).stdout
    fields = dict(f.split("=", 1) for f in out.split() if "=" in f)
    cpus = int(fields.get("CPUs", os.cpu_count() or 1))
    memory = min(int(fields.get("RealMemory", 4000)) - 500, 8000)
    return f"NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN"


class SlurmCluster:
    def __init__(self) -> None:
        # Not pytest's tmp_path: that is root-only (0700), and munged runs as user munge.
        self.dir = Path(tempfile.mkdtemp(prefix="xraypipe-slurm-"))
        os.chmod(self.dir, 0o755)
        self.conf = self.dir / "slurm.conf"
        self.procs: dict[str, subprocess.Popen] = {}

    # -- lifecycle -----------------------------------------------------------------------------------------
    def start(self, timeout: float = 60) -> SlurmCluster:
        self._start_munge()
        self._write_conf()
        for name, args in (("slurmctld", ["-D", "-i", "-f", str(self.conf)]),
                           ("slurmd", ["-D", "-N", "localhost", "-f", str(self.conf)])):
            log = open(self.dir / f"{name}.stdout", "w")
            self.procs[name] = subprocess.Popen([_binary(name), *args], stdout=log, stderr=subprocess.STDOUT,
                                                env=self.env(), start_new_session=True)
            if name == "slurmctld":
                self._wait(lambda: self.run(["scontrol", "ping"], check=False).returncode == 0, timeout,
                           "slurmctld did not answer scontrol ping")
        self._wait(self._node_idle, timeout, "the node did not become idle")
        return self

    def stop(self) -> None:
        """SIGTERM each daemon by PID, SIGKILL it if it has not gone after 15 s."""
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- clients -------------------------------------------------------------------------------------------
    def env(self, base: dict | None = None) -> dict:
        env = dict(os.environ if base is None else base)
        env["SLURM_CONF"] = str(self.conf)
        env["PATH"] = f"{self.dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        for key in [k for k in env if k.startswith(("SLURM_JOB", "SLURM_STEP", "SBATCH_", "SRUN_"))]:
            del env[key]  # never inherit the settings of an enclosing allocation
        return env

    def run(self, cmd: list[str], check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        proc = subprocess.run([_binary(cmd[0]), *cmd[1:]], env=self.env(), capture_output=True, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr}")
        return proc

    def logs(self) -> str:
        parts = []
        for name in ("munge/munged.log", "slurmctld.log", "slurmd.log", "slurmctld.stdout", "slurmd.stdout"):
            path = self.dir / name
            if path.exists():
                parts.append(f"--- {name} ---\n" + path.read_text(errors="replace")[-3000:])
        return "\n".join(parts)

    # -- internals -----------------------------------------------------------------------------------------
    def _start_munge(self) -> None:
        munge = pwd.getpwnam("munge")
        mdir = self.dir / "munge"
        mdir.mkdir()
        mdir.chmod(0o755)  # munged: the socket directory must be traversable by all (clients)
        key = mdir / "munge.key"
        key.write_bytes(os.urandom(128))
        key.chmod(0o400)
        for path in (mdir, key):
            os.chown(path, munge.pw_uid, munge.pw_gid)
        self.munge_socket = mdir / "munge.socket"
        args = [_binary("munged"), "-F", f"--socket={self.munge_socket}", f"--key-file={key}",
                f"--log-file={mdir / 'munged.log'}", f"--pid-file={mdir / 'munged.pid'}",
                f"--seed-file={mdir / 'munged.seed'}", "--num-threads=2"]
        self.procs["munged"] = subprocess.Popen(args, user=munge.pw_uid, group=munge.pw_gid,
                                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                                start_new_session=True)
        self._wait(self.munge_socket.exists, 30, "munged did not create its socket")

    def _write_conf(self) -> None:
        d = self.dir
        # Inside a job the Snakemake jobstep plugin starts the rule with `srun`, after removing every SLURM_*
        # variable (SLURM_CONF included) from its environment. On a real cluster srun then reads the default
        # /etc/slurm/slurm.conf; this cluster's conf is in a temp dir, so an `srun` first on PATH restores it.
        (d / "bin").mkdir()
        shim = d / "bin" / "srun"
        shim.write_text(f'#!/bin/sh\nSLURM_CONF={self.conf} exec {_binary("srun")} "$@"\n')
        shim.chmod(0o755)
        for sub in ("state", "spool"):
            (d / sub).mkdir()
        lines = [
            "ClusterName=xraypipe-test",
            "SlurmctldHost=localhost",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            f"StateSaveLocation={d / 'state'}",
            f"SlurmdSpoolDir={d / 'spool'}",
            f"SlurmctldPidFile={d / 'slurmctld.pid'}",
            f"SlurmdPidFile={d / 'slurmd.pid'}",
            f"SlurmctldLogFile={d / 'slurmctld.log'}",
            f"SlurmdLogFile={d / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "SchedulerType=sched/backfill",
            "MpiDefault=none",
            "ReturnToService=2",
            # squeue (the plugin's status command here, there is no slurmdbd) must still see finished jobs
            "MinJobAge=900",
            "KillWait=5",
            _node_line(),
            "PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP",
        ]
        self.conf.write_text("\n".join(lines) + "\n")

    def _node_idle(self) -> bool:
        out = self.run(["sinfo", "-h", "-N", "-o", "%T"], check=False).stdout.strip().lower()
        return out.startswith("idle") or out.startswith("mixed")

    def _wait(self, condition, timeout: float, message: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited ({proc.returncode}) while starting\n{self.logs()}")
            if condition():
                return
            time.sleep(0.5)
        raise RuntimeError(f"{message} within {timeout:.0f} s\n{self.logs()}")
