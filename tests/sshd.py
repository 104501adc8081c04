"""A private sshd on 127.0.0.1 for the ``ssh://`` tests: its own host key, config and port in
a temporary folder, and a second local user (made with useradd, removed afterwards) whose
home holds the repositories and whose authorized_keys the tests fill with keys made here.

``ssh_server`` is the session fixture (one sshd per session, stopped by its process id);
``ssh_environment`` puts, for one test, the client settings in the environment, where the
diskvault subprocesses find them: DISKVAULT_RSH (this key, this known_hosts file, no
~/.ssh/config) and DISKVAULT_REMOTE_PATH (this interpreter and this checkout's code, as the
second user runs them on the far side).
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

import diskvault

SSHD = "/usr/sbin/sshd"
START_DEADLINE_S = 30.0
POLL_S = 0.02
SOURCE = Path(diskvault.__file__).resolve().parents[1]  # the code under test, for the far side
URL_VARIABLE = "DISKVAULT_TEST_SSH_URL"


@dataclass(frozen=True)
class SshServer:
    port: int
    user: str
    uid: int
    gid: int
    home: Path  # the second user's home, 0700, where its repositories go
    folder: Path  # host key, config, client keys, known_hosts
    remote_path: str  # how the second user runs this interpreter on this checkout's code

    @property
    def base_url(self) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        """``path`` relative to the user's home there."""
        return f"{self.base_url}/~/{path}"

    def rsh(self, key: Path) -> str:
        return shlex.join(["ssh", "-F", "/dev/null", "-i", str(key), "-o", "IdentitiesOnly=yes",
                           "-o", f"UserKnownHostsFile={self.folder / 'known_hosts'}",
                           "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
                           "-o", "LogLevel=ERROR"])

    def add_key(self, name: str, forced_command: str | None = None) -> Path:
        """A new client key, authorized for the user (with ``forced_command`` and
        ``restrict`` if given, as an administrator writes an append-only line)."""
        key = self.folder / name
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f",
                        str(key)], check=True, capture_output=True)
        options = (f'command="{forced_command}",restrict ' if forced_command else "")
        authorized = self.home / ".ssh" / "authorized_keys"
        with open(authorized, "a") as lines:
            lines.write(options + (key.with_suffix(".pub")).read_text())
        return key

    def serve_command(self, *arguments: str) -> str:
        """The far-side command line of ``serve-repository ARGUMENTS`` (for command=)."""
        return f"{self.remote_path} serve-repository {shlex.join(arguments)}"

    def servers_running(self) -> int:
        """How many serve-repository processes of the user run: a request that reached
        the far side before its client was killed is still carried out there."""
        count = 0
        for entry in Path("/proc").iterdir():
            try:
                if not entry.name.isdigit() or entry.stat().st_uid != self.uid:
                    continue
                command = (entry / "cmdline").read_bytes().split(b"\0")
                name = (entry / "comm").read_text().strip()
            except OSError:
                continue  # ended while we looked
            count += name.startswith("python") and b"serve-repository" in command
        return count

    def run_as_user(self, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}",
                               "--clear-groups", "--", *argv], capture_output=True, timeout=60)


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "a private sshd that logs in a second user needs root"
    for tool in (SSHD, "ssh", "ssh-keygen", "useradd", "setpriv"):
        if not shutil.which(tool):
            return (f"{tool} is not installed (apt-get install openssh-server "
                    f"openssh-client passwd util-linux, or scripts/setup.sh --tests)")
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until_listening(process: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + START_DEADLINE_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sshd ended at start: {log.read_text()[-500:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(POLL_S)
    raise RuntimeError(f"sshd did not listen on port {port} within {START_DEADLINE_S} s")


def _make_user(home: Path) -> str:
    name = f"dvssh{os.getpid() % 100000}"
    subprocess.run(["useradd", "--home-dir", str(home), "--shell", "/bin/sh", name],
                   check=True, capture_output=True)
    # useradd locks the account ("!"), and sshd refuses locked accounts; "*" has no
    # password either, but is not locked.
    subprocess.run(["usermod", "-p", "*", name], check=True, capture_output=True)
    return name


def _remote_path(interpreter: Path, source: Path) -> str:
    return shlex.join(["env", f"PYTHONPATH={source}", str(interpreter), "-m", "diskvault"])


def _probe(server: "SshServer", source: Path) -> subprocess.CompletedProcess:
    """Whether the second user runs this checkout's code (not another copy of diskvault
    that its interpreter finds when ``source`` is out of its reach)."""
    interpreter = shlex.split(server.remote_path)[2]
    check = (f"import diskvault, sys; sys.exit(diskvault.__file__ != "
             f"{str(source / 'diskvault' / '__init__.py')!r})")
    return server.run_as_user("env", f"PYTHONPATH={source}", interpreter, "-c", check)


def _bind_views(folder: Path) -> Path:
    """This checkout's code and the test interpreter's environment, bind-mounted where the
    second user can reach them: a checkout under a private folder (CI's under /root) is out of
    its reach, and the ssh:// tests would otherwise all skip."""
    views = folder / "views"
    for name, target in (("src", SOURCE), ("venv", Path(sys.prefix))):
        (views / name).mkdir(parents=True)
        subprocess.run(["mount", "--bind", "-o", "ro", str(target), str(views / name)],
                       check=True, capture_output=True)
    folder.chmod(0o755)
    return views


def _unbind_views(folder: Path) -> None:
    """Unmount the views and remove their (then empty) folders: rmdir, never a recursive
    removal, so that a view still mounted stops the clean-up instead of deleting the
    checkout or the interpreter's environment through it."""
    for name in ("src", "venv"):
        view = folder / "views" / name
        if view.exists():
            subprocess.run(["umount", "--lazy", str(view)], capture_output=True)
            view.rmdir()


class SshdUnusable(Exception):
    """This machine cannot run the private sshd (the message says why)."""


@contextmanager
def running_sshd() -> Iterator[SshServer]:
    """A private sshd and its second user, for as long as the block runs; both are always
    removed (the sshd stopped by its process id). SshdUnusable if one cannot be had."""
    missing = _missing()
    if missing:
        raise SshdUnusable(missing)
    folder = Path(tempfile.mkdtemp(prefix="diskvault-sshd-"))
    home = Path(tempfile.mkdtemp(prefix="diskvault-ssh-home-"))
    user, process = None, None
    try:
        user = _make_user(home)
        record = pwd.getpwnam(user)
        (home / ".ssh").mkdir(mode=0o700)
        (home / ".ssh" / "authorized_keys").touch(mode=0o600)
        for path in (home, home / ".ssh", home / ".ssh" / "authorized_keys"):
            os.chown(path, record.pw_uid, record.pw_gid)
        server = SshServer(_free_port(), user, record.pw_uid, record.pw_gid, home, folder,
                           _remote_path(Path(sys.executable), SOURCE))
        probe = _probe(server, SOURCE)
        if probe.returncode != 0:
            views = _bind_views(folder)
            server = SshServer(server.port, user, record.pw_uid, record.pw_gid, home, folder,
                               _remote_path(views / "venv" / Path(sys.executable).relative_to(
                                   sys.prefix), views / "src"))
            probe = _probe(server, views / "src")
        if probe.returncode != 0:
            raise SshdUnusable(f"the second user cannot run {sys.executable} with {SOURCE}, "
                               f"even through bind mounts: {probe.stderr.decode()[-200:]}")
        process = _start_sshd(server)
        yield server
    finally:
        if process is not None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
        if user is not None:
            subprocess.run(["userdel", user], capture_output=True)
        _unbind_views(folder)
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def ssh_server() -> Iterator[SshServer]:
    try:
        with running_sshd() as server:
            yield server
    except SshdUnusable as reason:
        pytest.skip(f"the ssh:// tests need a real sshd: {reason}")


def _start_sshd(server: SshServer) -> subprocess.Popen:
    folder = server.folder
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                    str(folder / "host_key")], check=True, capture_output=True)
    host_key = (folder / "host_key.pub").read_text().split()
    (folder / "known_hosts").write_text(f"[127.0.0.1]:{server.port} {host_key[0]} "
                                        f"{host_key[1]}\n")
    (folder / "sshd_config").write_text(
        f"Port {server.port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host_key'}\n"
        f"PidFile none\nAuthorizedKeysFile .ssh/authorized_keys\nPubkeyAuthentication yes\n"
        f"PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        f"AllowUsers {server.user}\nMaxStartups 64\nLogLevel ERROR\n")
    # Debian's sshd wants its privilege-separation folder, which its service would make.
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    log = folder / "sshd.log"  # a file, not a pipe: a full pipe would stop sshd
    with open(log, "wb") as errors:
        process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(folder / "sshd_config")],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=errors)
    try:
        _wait_until_listening(process, server.port, log)
    except BaseException:
        process.kill()
        process.wait()
        raise
    return process


@pytest.fixture(scope="session")
def ssh_full_key(ssh_server: SshServer) -> Path:
    """A key that may do anything the user may (the administrator's)."""
    return ssh_server.add_key("full")


@pytest.fixture
def ssh_environment(ssh_server: SshServer, ssh_full_key: Path, monkeypatch) -> SshServer:
    """The full key, the known host and the far side's diskvault in the environment for one
    test, where child processes inherit them."""
    monkeypatch.setenv("DISKVAULT_RSH", ssh_server.rsh(ssh_full_key))
    monkeypatch.setenv("DISKVAULT_REMOTE_PATH", ssh_server.remote_path)
    monkeypatch.setenv(URL_VARIABLE, ssh_server.base_url)
    return ssh_server
