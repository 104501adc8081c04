"""Shared fixtures: real repositories and real image files in tmp_path."""

from __future__ import annotations

import hashlib
import os
import pwd
import random
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from diskvault.store.format.config import PLAINTEXT_MODE, REPOKEY_MODE
from diskvault.store.repository import Repository

from .ceph import (ceph_locked_bucket, ceph_s3, s3_environment,  # noqa: F401  (fixtures:
                   s3_locked_environment)  # a real Ceph for S3, a bucket with Object Lock)
from .sshd import ssh_environment, ssh_full_key, ssh_server  # noqa: F401  (a real sshd)
from .guests import GuestKernel, unpack_kernel

SMALL_CHUNKS = 4096  # average chunk size for fast tests: many chunks from small images
TEST_PASSPHRASE = "correct horse battery staple"

# A user's PATH lacks the sbin folders, where Debian puts mkfs.*, sfdisk, mkswap, losetup and
# useradd; most of them make image files without root. Found there, they run for every user
# (in this process and the subprocesses), and a test that needs one skips only when it is
# really missing.
SBIN_FOLDERS = ("/usr/local/sbin", "/usr/sbin", "/sbin")
os.environ["PATH"] = os.pathsep.join(
    [os.environ.get("PATH", os.defpath)]
    + [folder for folder in SBIN_FOLDERS
       if folder not in os.environ.get("PATH", "").split(os.pathsep)])

# Every diskvault the tests start (run_cli, the mount's daemon) and every Repository.open
# of an encrypted repository finds its passphrase here; new keys get a cheap KDF.
os.environ.setdefault("DISKVAULT_PASSWORD", TEST_PASSPHRASE)
os.environ.setdefault("DISKVAULT_INSECURE_TEST_KDF", "1")

# A module runs its `repo` tests (and whatever else takes `encryption`) in both modes with,
# at module level, `encryption = in_both_modes()`; the others run plaintext only, which
# keeps the suite's time modest. The chosen modules: round trips, restore, mount reads,
# prune, compact, check/repair, the SIGKILL crash test.
BOTH_MODES = [PLAINTEXT_MODE, REPOKEY_MODE]


def in_both_modes():
    """A module-level `encryption` fixture parametrised over both modes."""
    def encryption(request) -> str:
        return request.param
    return pytest.fixture(params=BOTH_MODES, ids=["plain", "encrypted"])(encryption)


@pytest.fixture(autouse=True)
def private_state_folder(tmp_path: Path, monkeypatch) -> None:
    """What diskvault remembers and caches on the host (restore marks, what a target holds,
    the snapshot catalogue) stays in the test's folder, for the CLI subprocesses too."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def guest_kernel(tmp_path_factory) -> GuestKernel:
    """Debian's cloud kernel, downloaded and unpacked once for every guest of the session."""
    return unpack_kernel(tmp_path_factory.mktemp("guest-kernel"))


@pytest.fixture
def encryption() -> str:
    """The encryption mode of the `repo` fixture (and of `init` in tests that ask)."""
    return PLAINTEXT_MODE


@pytest.fixture
def repo(tmp_path: Path, encryption: str):
    """An initialised repository with small chunks (min 1 KiB, avg 4 KiB, max 16 KiB),
    plaintext unless the module runs both modes."""
    repository = Repository.init(tmp_path / "repo", chunk_size=SMALL_CHUNKS,
                                 encryption=encryption,
                                 passphrase=os.environ["DISKVAULT_PASSWORD"])
    yield repository
    repository.close()


def init_args(encryption: str) -> list[str]:
    """The `init` options for ``encryption`` (the CLI's default is repokey)."""
    return ["--encryption", "none" if encryption == PLAINTEXT_MODE else "repokey"]


def write_image(path: Path, size: int, pattern: str = "random", seed: int = 0) -> Path:
    """A real image file. Patterns: random, zeros, sparse (holes + data), mixed
    (random, repeated blocks, zero runs, text)."""
    rng = random.Random(seed)
    with open(path, "wb") as handle:
        if pattern == "random":
            handle.write(rng.randbytes(size))
        elif pattern == "zeros":
            handle.write(bytes(size))
        elif pattern == "sparse":
            handle.truncate(size)
            for _ in range(max(1, size // (1 << 20))):
                offset = rng.randrange(0, max(1, size - 65536)) & ~4095
                handle.seek(offset)
                handle.write(rng.randbytes(min(65536, size - offset)))
        elif pattern == "mixed":
            block = rng.randbytes(32768)
            written = 0
            while written < size:
                kind = rng.randrange(4)
                piece = [rng.randbytes(rng.randrange(1, 200_000)), block,
                         bytes(rng.randrange(1, 300_000)),
                         b"log line %d\n" % rng.randrange(10**6) * rng.randrange(1, 3000)][kind]
                piece = piece[: size - written]
                handle.write(piece)
                written += len(piece)
        else:
            raise ValueError(pattern)
    return path


@pytest.fixture
def make_image(tmp_path: Path):
    """make_image(size, pattern="random", seed=0, name=None) -> Path of a new image file."""
    counter = iter(range(10**6))

    def make(size: int, pattern: str = "random", seed: int = 0, name: str | None = None) -> Path:
        return write_image(tmp_path / (name or f"image{next(counter)}.img"), size, pattern, seed)

    return make


def run_cli(*args: str, env: dict | None = None, input: bytes | None = None,
            check: bool = False) -> subprocess.CompletedProcess:
    """The real `diskvault` command in a subprocess (not click's test runner)."""
    full_env = {**os.environ, **(env or {})}
    result = subprocess.run([sys.executable, "-m", "diskvault", *args], capture_output=True,
                            env=full_env, input=input, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"diskvault {' '.join(args)} failed ({result.returncode}): "
                             f"{result.stderr.decode(errors='replace')}")
    return result


@pytest.fixture
def other_user(tmp_path_factory):
    """A second, unprivileged local user (made with useradd, removed afterwards) and a
    world-traversable scratch folder it can reach: for the tests of what another user can
    and cannot read. ``other_user.run(*argv)`` runs a command as that user."""
    if os.geteuid() != 0:
        pytest.skip("making a second user needs root")
    if not shutil.which("useradd"):
        pytest.skip("useradd is not installed (apt-get install passwd)")
    name = f"dvtest{os.getpid() % 100000}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", name], check=True,
                   capture_output=True)
    scratch = Path(tempfile.mkdtemp(prefix="diskvault-shared-"))
    scratch.chmod(0o755)
    try:
        yield OtherUser(name, pwd.getpwnam(name).pw_uid, pwd.getpwnam(name).pw_gid, scratch)
    finally:
        subprocess.run(["userdel", name], capture_output=True)
        shutil.rmtree(scratch, ignore_errors=True)


def run_killed_at_random(command: list[str], rng, whole_run_s: float) -> None:
    """Run ``command``, SIGKILLed at a random point between 30 % and 100 % of
    ``whole_run_s`` (how long a whole run took), unless it ended before."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        process.wait(timeout=rng.uniform(0.3, 1.0) * whole_run_s)  # the kill point
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()


class HashSink:
    """A write-only stream that keeps only the sha256 of what went through it."""

    def __init__(self):
        self.digest = hashlib.sha256()

    def write(self, data) -> int:
        self.digest.update(data)
        return len(data)

    def flush(self) -> None:
        pass


@dataclass(frozen=True)
class OtherUser:
    name: str
    uid: int
    gid: int
    scratch: Path  # a 0755 folder under /tmp, removed afterwards

    def run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """``argv`` run as this user, with a home of its own (as `runuser -l` gives): its
        cache and state folders are its own, not root's."""
        home = self.scratch / "home"
        if not home.exists():
            home.mkdir(mode=0o700)
            os.chown(home, self.uid, self.gid)
        environment = {key: value for key, value in os.environ.items()
                       if not key.startswith("XDG_")}
        environment["HOME"] = str(home)
        return subprocess.run(["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}",
                               "--clear-groups", "--", *argv], capture_output=True,
                              timeout=timeout, env=environment)
