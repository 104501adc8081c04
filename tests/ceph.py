"""A throwaway single-node Ceph serving S3 on 127.0.0.1, for the object-store tests: one
monitor, one OSD on memstore, radosgw (beast), all started from an empty temporary folder as
child processes of the test session and stopped by their process ids. The recipe and its
pitfalls are measured in ../shared/ceph-rgw.md (Ceph 16 / Pacific); the comments below name
the pitfall each choice avoids.

``ceph_s3`` is the session fixture: the cluster starts once per test session, and is always
torn down (daemons killed, waited for until gone, folder removed), also after a failed start.
"""

from __future__ import annotations

import ctypes
import json
import logging
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

log = logging.getLogger(__name__)

TOOLS = ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "ceph", "ceph-authtool",
         "monmaptool")
PACKAGES = "ceph-mon ceph-osd radosgw ceph-common"
START_DEADLINE_S = 90.0  # measured 5-13 s on a loaded 2-core machine
COMMAND_TIMEOUT_S = 60.0
POLL_S = 0.1
PROBE_TIMEOUT_S = 2.0  # a port taken by a listener that never answers must not hang the probe
BUCKET = "diskvault-tests"
MEMSTORE_BYTES = 1 << 30  # the OSD's memory: enough for the tests
PR_SET_PDEATHSIG = 1  # linux/prctl.h

CONFIG = """\
[global]
fsid = {fsid}
mon host = v2:127.0.0.1:{mon_port}
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv6 = false
ms bind msgr1 = false
ms bind msgr2 = true
ms bind port min = 6800
ms bind port max = 7300
auth cluster required = none
auth service required = none
auth client required = none
# radosgw asks the mon for "secure" mode only, which auth none cannot do (pitfall 1)
ms mon client mode = crc secure
ms client mode = crc secure
auth allow insecure global id reclaim = false
run dir = {folder}/run
admin socket = {folder}/run/$name.asok
pid file = {folder}/run/$name.pid
log file = {folder}/log/$name.log
# else the mon writes /var/log/ceph/ceph.log and ceph.audit.log (pitfall 2)
mon cluster log file = {folder}/log/$cluster.$channel.log
crash dir = {folder}/crash
keyring = {folder}/keyring
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
mon data avail crit = 1
mon data avail warn = 2
# every pool radosgw creates waits one paxos round: 1 s by default made it start in ~14 s
paxos propose interval = 0.1

[mon]
mon data = {folder}/mon.$id

[osd]
osd data = {folder}/osd.$id
osd objectstore = memstore
# not a cap (pitfall 8), but the OSD stops taking writes at 97 % of it (full failsafe):
# the tests write a few hundred MiB at most; benchmarks ask for more
memstore device bytes = {memstore_bytes}

[client.rgw.a]
rgw data = {folder}/rgw
rgw frontends = beast endpoint=127.0.0.1:{rgw_port}
# overwritten and deleted tail objects are freed only by GC (default wait: 2 h)
rgw gc obj min wait = 60
rgw gc processor period = 60
"""


class CephStartFailed(Exception):
    """The cluster did not come up; ``daemon_died`` tells a daemon that exited (a port
    taken between picking and binding it) from one that never got ready."""

    def __init__(self, message: str, daemon_died: bool):
        super().__init__(message)
        self.daemon_died = daemon_died


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    cluster: CephCluster | None = None  # for fault tests: restart_gateway()

    def environ(self) -> dict[str, str]:
        """What a process needs to reach the server (credentials never go on a command line)."""
        return {"DISKVAULT_S3_ENDPOINT": self.endpoint, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_EC2_METADATA_DISABLED": "true"}


def free_port() -> int:
    """A port free right now; someone may take it before the daemon binds (pitfall 12)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class CephCluster:
    """The cluster's folder and daemons; ``stop`` is safe at any point of ``start``."""

    def __init__(self, folder: Path, memstore_bytes: int = MEMSTORE_BYTES):
        self.folder = folder
        self.memstore_bytes = memstore_bytes
        self.config = folder / "ceph.conf"
        self.daemons: dict[str, subprocess.Popen] = {}
        self.rgw_port = 0

    def start(self) -> None:
        deadline = time.monotonic() + START_DEADLINE_S
        for sub in ("run", "log", "crash", "mon.a", "osd.0", "rgw"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        mon_port, self.rgw_port, fsid = free_port(), free_port(), str(uuid.uuid4())
        self.config.write_text(CONFIG.format(fsid=fsid, mon_port=mon_port,
                                             rgw_port=self.rgw_port, folder=self.folder,
                                             memstore_bytes=self.memstore_bytes))
        self._run("ceph-authtool", "--create-keyring", self.folder / "keyring", "--gen-key",
                  "-n", "mon.", "--cap", "mon", "allow *")  # mkfs wants one even with auth none
        self._run("monmaptool", "--create", "--clobber", "--fsid", fsid, "--addv", "a",
                  f"[v2:127.0.0.1:{mon_port}]", self.folder / "monmap")
        self._run("ceph-mon", "--mkfs", "-i", "a", "--monmap", self.folder / "monmap",
                  "--keyring", self.folder / "keyring")
        self._spawn("mon", "ceph-mon", "-i", "a")
        osd_uuid = str(uuid.uuid4())
        # answers once the mon is up: the mon's readiness wait
        self._run_while_alive(deadline, "ceph", "osd", "new", osd_uuid)
        self._run("ceph-osd", "-i", "0", "--mkfs", "--osd-uuid", osd_uuid)
        self._spawn("osd", "ceph-osd", "-i", "0")
        self._spawn("rgw", "radosgw", "-n", "client.rgw.a")
        self._wait_for_rgw(deadline)

    def kill_gateway(self) -> None:
        """SIGKILL radosgw (a fault test's crash of the server), and wait until it is gone."""
        gateway = self.daemons["rgw"]
        gateway.kill()
        gateway.wait(timeout=COMMAND_TIMEOUT_S)

    def start_gateway(self) -> None:
        """radosgw again on the same port, once it answers."""
        self._spawn("rgw", "radosgw", "-n", "client.rgw.a")
        self._wait_for_rgw(time.monotonic() + START_DEADLINE_S)

    def add_user(self) -> tuple[str, str]:
        access_key, secret_key = secrets.token_hex(10).upper(), secrets.token_hex(20)
        self._run("radosgw-admin", "user", "create", "--uid=diskvault", "--display-name=tests",
                  f"--access-key={access_key}", f"--secret-key={secret_key}")
        return access_key, secret_key

    def add_subuser(self, name: str) -> tuple[str, str]:
        """A subuser ``diskvault:<name>`` of the tests' user, with S3 keys: what it writes
        belongs to the tests' user (so that user reads it), and a bucket policy may still
        deny it actions (principal ``arn:aws:iam:::user/diskvault:<name>``)."""
        created = json.loads(self._run(
            "radosgw-admin", "subuser", "create", "--uid=diskvault",
            f"--subuser=diskvault:{name}", "--access=full", "--key-type=s3",
            "--gen-access-key", "--gen-secret"))
        keys = next(k for k in created["keys"] if k["user"] == f"diskvault:{name}")
        return keys["access_key"], keys["secret_key"]

    def perf_dump(self, daemon: str = "client.rgw.a") -> dict:
        """The daemon's performance counters, read through its admin socket."""
        socket_path = self.folder / "run" / f"{daemon}.asok"
        return json.loads(self._run("ceph", "--admin-daemon", socket_path, "perf", "dump"))

    # -- daemons and commands -------------------------------------------------------------
    def _command(self, *args) -> list[str]:
        return [str(args[0]), "-c", str(self.config), *map(str, args[1:])]

    def _spawn(self, role: str, *args) -> None:
        """In the foreground (-f), so this Popen's pid is the daemon's own (pitfall 4); and
        killed by the kernel if the test session itself is killed before its teardown."""
        with open(self.folder / "log" / f"{role}.out", "wb") as out:
            self.daemons[role] = subprocess.Popen([*self._command(*args), "-f"],
                                                  stdin=subprocess.DEVNULL, stdout=out,
                                                  stderr=subprocess.STDOUT,
                                                  preexec_fn=_die_with_parent)

    def _run(self, *args) -> str:
        try:
            done = subprocess.run(self._command(*args), stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise CephStartFailed(f"{args[0]} did not finish within {COMMAND_TIMEOUT_S:.0f} s"
                                  f"{self._deaths()}", self._any_dead()) from None
        if done.returncode != 0:
            raise CephStartFailed(f"{' '.join(map(str, args[:3]))} failed: "
                                  f"{done.stderr.strip()[-500:]}{self._deaths()}",
                                  self._any_dead())
        return done.stdout

    def _run_while_alive(self, deadline: float, *args) -> None:
        """A command that waits for the daemons: given up on if one of them dies."""
        command = subprocess.Popen(self._command(*args), stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            while command.poll() is None:
                self._check_alive(deadline, f"{args[0]} {args[1]} {args[2]}")
                time.sleep(POLL_S)
            if command.returncode != 0:
                raise CephStartFailed(f"{' '.join(args[:3])} failed: "
                                      f"{command.stderr.read().decode()[-500:]}", False)
        finally:
            if command.poll() is None:
                command.kill()
            command.wait()
            command.stderr.close()

    def _wait_for_rgw(self, deadline: float) -> None:
        url = f"http://127.0.0.1:{self.rgw_port}/"
        while True:
            self._check_alive(deadline, f"radosgw to answer on {url}")
            try:
                with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(POLL_S)

    def _check_alive(self, deadline: float, what: str) -> None:
        if self._any_dead():
            raise CephStartFailed(f"waiting for {what}:{self._deaths()}", True)
        if time.monotonic() > deadline:
            raise CephStartFailed(f"timed out after {START_DEADLINE_S:.0f} s waiting for "
                                  f"{what}", False)

    def _any_dead(self) -> bool:
        return any(daemon.poll() is not None for daemon in self.daemons.values())

    def _deaths(self) -> str:
        return "".join(f" {role} exited ({daemon.returncode}): {self._log_tail(role)}"
                       for role, daemon in self.daemons.items() if daemon.poll() is not None)

    def _log_tail(self, role: str) -> str:
        try:
            lines = (self.folder / "log" / f"{role}.out").read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(lines.strip().splitlines()[-3:])

    def stop(self) -> None:
        """SIGKILL each daemon by its id (still ours: a child not yet waited for keeps its
        pid), wait until it is gone -- an OSD holds its ports until it has exited
        (pitfall 5) -- then remove the folder. Goes on past its own errors (pitfall 6)."""
        for daemon in self.daemons.values():
            if daemon.poll() is None:
                try:
                    daemon.kill()
                except ProcessLookupError:
                    pass
        for role, daemon in self.daemons.items():
            try:
                daemon.wait(timeout=COMMAND_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log.error("ceph %s (pid %d) did not exit after SIGKILL", role, daemon.pid)
        self.daemons.clear()
        shutil.rmtree(self.folder, ignore_errors=True)


def _die_with_parent() -> None:
    """prctl(PR_SET_PDEATHSIG, SIGKILL) in the child before exec."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


@contextmanager
def running_ceph(bucket: str = BUCKET, memstore_bytes: int = MEMSTORE_BYTES
                 ) -> Iterator[tuple[CephCluster, S3Server]]:
    """A running cluster with a user and an empty bucket, always torn down afterwards (the
    tests' session fixture, and benchmarks/s3.py); the OSD holds ``memstore_bytes``."""
    import boto3

    started = time.monotonic()
    cluster = None
    try:
        for attempt in (1, 2):
            cluster = CephCluster(Path(tempfile.mkdtemp(prefix="dv-ceph-")), memstore_bytes)
            try:
                cluster.start()
                break
            except CephStartFailed as error:
                cluster.stop()
                if attempt == 2 or not error.daemon_died:
                    raise
                log.warning("ceph did not start (%s); once more on other ports", error)
        access_key, secret_key = cluster.add_user()
        server = S3Server(f"http://127.0.0.1:{cluster.rgw_port}", access_key, secret_key,
                          bucket, cluster)
        boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=access_key,
                     aws_secret_access_key=secret_key,
                     region_name="us-east-1").create_bucket(Bucket=bucket)
        log.info("ceph with radosgw on %s up in %.1f s", server.endpoint,
                 time.monotonic() - started)
        yield cluster, server
    finally:
        if cluster is not None:
            cluster.stop()


@pytest.fixture(scope="session")
def ceph_s3() -> Iterator[S3Server]:
    """A running radosgw with a user and an empty bucket, for the whole session."""
    missing = missing_tools()
    if missing:
        pytest.skip(f"the object-store tests need a real Ceph: {', '.join(missing)} not "
                    f"installed (apt-get install {PACKAGES}, or scripts/setup.sh --tests)")
    pytest.importorskip("boto3", reason="the object-store tests need boto3 "
                                        "(pip install -e '.[test]')")
    with running_ceph() as (_, server):
        yield server


@pytest.fixture
def s3_environment(ceph_s3: S3Server, monkeypatch) -> S3Server:
    """The server's endpoint, keys and bucket in this process's environment for one test,
    where child processes inherit them."""
    for variable, value in ceph_s3.environ().items():
        monkeypatch.setenv(variable, value)
    monkeypatch.setenv("DISKVAULT_TEST_S3_BUCKET", ceph_s3.bucket)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return ceph_s3


LOCKED_BUCKET = "diskvault-object-lock"  # made with S3 Object Lock (so: versioned)


@pytest.fixture(scope="session")
def ceph_locked_bucket(ceph_s3: S3Server) -> str:
    """A bucket with Object Lock beside the session's plain one; tests use prefixes of
    their own in it."""
    import boto3

    boto3.client("s3", endpoint_url=ceph_s3.endpoint, aws_access_key_id=ceph_s3.access_key,
                 aws_secret_access_key=ceph_s3.secret_key, region_name="us-east-1"
                 ).create_bucket(Bucket=LOCKED_BUCKET, ObjectLockEnabledForBucket=True)
    return LOCKED_BUCKET


@pytest.fixture
def s3_locked_environment(s3_environment: S3Server, ceph_locked_bucket: str,
                          monkeypatch) -> S3Server:
    """s3_environment, with the Object Lock bucket's name in DISKVAULT_TEST_S3_LOCKED_BUCKET."""
    monkeypatch.setenv("DISKVAULT_TEST_S3_LOCKED_BUCKET", ceph_locked_bucket)
    return s3_environment
