"""nbdkit started, watched and stopped for ``diskvault serve``: where it listens, the URI
clients use, the key handed over a pipe, and the socket removed on every exit.

Why nbdkit and not an NBD server of our own: the protocol's negotiation, structured
replies, block status, multi-connection and TLS are nbdkit's, maintained and tested against
every client (qemu, libnbd, the kernel); diskvault supplies only reads and extents.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadInput, ExportFailed, NbdUnavailable
from ..store.format.crypto import Keys

PLUGIN = Path(__file__).with_name("plugin.py")
INSTALL_HINT = "install the Debian packages nbdkit and nbdkit-plugin-python"
READY_POLL_S = 0.02
READY_TIMEOUT_S = 120.0  # opening an object-store repository may take a while
STOP_TIMEOUT_S = 30.0
DEFAULT_HOST = "127.0.0.1"
# nbdkit threads per connection. From a local disk, reads are the pool's work (decompress,
# verify); more nbdkit threads only pass the plugin's GIL around (a full read through nbdkit
# was faster with 4 than with nbdkit's default 16, docs/instant-recovery.md). A remote
# repository's small reads wait on the network in these threads: keep nbdkit's 16.
LOCAL_THREADS = 4
REMOTE_THREADS = 16


CERTIFICATE_FILES = ("ca-cert.pem", "server-cert.pem", "server-key.pem")  # nbdkit's layout


@dataclass(frozen=True)
class Tls:
    """TLS for a TCP export, one of two kinds: a pre-shared key (nbdkit's PSK file,
    ``psktool`` format, ``USER:HEXKEY`` lines, and the user a client names), or X.509
    certificates (a folder in nbdkit's layout, CERTIFICATE_FILES)."""
    psk_file: Path | None = None
    user: str | None = None
    certificates: Path | None = None


@dataclass(frozen=True)
class Endpoint:
    """Where the export listens: a Unix socket, or a TCP host and port (with TLS or not)."""
    socket: Path | None = None
    host: str | None = None
    port: int | None = None
    tls: Tls | None = None

    @property
    def uri(self) -> str:
        if self.socket is not None:
            return f"nbd+unix:///?socket={self.socket}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.tls is None:
            return f"nbd://{host}:{self.port}"
        if self.tls.certificates is not None:  # a client elsewhere names its own CA folder
            return f"nbds://{host}:{self.port}/?tls-certificates={self.tls.certificates}"
        return f"nbds://{self.tls.user}@{host}:{self.port}/?tls-psk-file={self.tls.psk_file}"

    def nbdkit_options(self) -> list[str]:
        if self.socket is not None:
            return ["--unix", str(self.socket)]
        listen = ["--ipaddr", self.host, "--port", str(self.port)]
        if self.tls is None:
            return listen
        if self.tls.certificates is not None:
            return [*listen, "--tls=require", f"--tls-certificates={self.tls.certificates}"]
        return [*listen, "--tls=require", f"--tls-psk={self.tls.psk_file}"]


def read_psk_file(path: Path) -> Tls:
    """The first user of a PSK file, checked to be ``USER:HEXKEY`` lines; BadInput if not."""
    try:
        lines = path.read_text().split()
    except (OSError, UnicodeDecodeError) as error:
        raise BadInput(f"--tls-psk {path}: cannot read it ({error})") from None
    pattern = re.compile(r"[A-Za-z0-9_.-]+:[0-9a-fA-F]+")
    if not lines or not all(pattern.fullmatch(line) for line in lines):
        raise BadInput(f"--tls-psk {path}: not a PSK file of USER:HEXKEY lines; make one with "
                       f"'psktool -u USER -p {path}' (Debian: gnutls-bin)")
    return Tls(psk_file=path.absolute(), user=lines[0].split(":")[0])


def read_certificate_folder(path: Path) -> Tls:
    """A folder of X.509 files in nbdkit's layout, checked to hold them; BadInput if not."""
    if not path.is_dir():
        raise BadInput(f"--tls-cert {path}: not a folder; give the folder holding "
                       f"{', '.join(CERTIFICATE_FILES)}")
    missing = [name for name in CERTIFICATE_FILES if not (path / name).is_file()]
    if missing:
        raise BadInput(f"--tls-cert {path}: {', '.join(missing)} missing; the folder needs "
                       f"{', '.join(CERTIFICATE_FILES)} (docs/instant-recovery.md)")
    return Tls(certificates=path.absolute())


def parse_tcp(value: str) -> tuple[str, int]:
    """``[HOST:]PORT`` (an IPv6 host in brackets) as (host, port); the host is localhost
    unless given, so an export reaches other machines only when asked to."""
    host, _, port = value.rpartition(":")
    host = host.strip("[]") or DEFAULT_HOST
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise BadInput(f"--tcp {value}: give [HOST:]PORT with a port from 1 to 65535, "
                       f"e.g. --tcp 10809 or --tcp 0.0.0.0:10809")
    return host, int(port)


def find_nbdkit() -> str:
    """The nbdkit program, checked to have its Python plugin; NbdUnavailable names what to
    install."""
    program = shutil.which("nbdkit")
    if program is None:
        raise NbdUnavailable(f"serve needs nbdkit, which is not installed: {INSTALL_HINT}")
    probe = subprocess.run([program, "python", "--version"], capture_output=True, text=True)
    if probe.returncode != 0:
        raise NbdUnavailable(f"nbdkit has no Python plugin on this machine: {INSTALL_HINT}")
    return program


def plugin_python_path() -> str:
    """PYTHONPATH for nbdkit's embedded python3: the folder this diskvault is imported from
    (found even when an editable install reaches it through an import hook), then this
    interpreter's sys.path (the virtual environment's libraries, after its .pth files)."""
    package_root = str(Path(__file__).resolve().parents[2])
    return os.pathsep.join([package_root, *(path for path in sys.path if path)])


@dataclass(frozen=True)
class ExportRequest:
    """What to serve and how: the plugin's parameters and nbdkit's options."""
    location: str
    snapshot_id: str
    keys: Keys | None
    socket: Path | None = None   # None and no tcp: a socket in a private folder
    tcp: tuple[str, int] | None = None
    tls: Tls | None = None
    writable: bool = False
    debug: bool = False
    local: bool = True  # a repository folder (not an object store or SSH): LOCAL_THREADS


class NbdServer:
    """A running nbdkit serving one snapshot; ``stop`` (also on SIGTERM in the CLI) ends
    it and removes its socket and private folder."""

    def __init__(self, request: ExportRequest):
        self.request = request
        self._folder = Path(tempfile.mkdtemp(prefix="diskvault-serve-",
                                             dir=os.environ.get("XDG_RUNTIME_DIR")))
        self.endpoint = self._endpoint()
        self._socket_id: tuple[int, int] | None = None
        self.process: subprocess.Popen | None = None

    def _endpoint(self) -> Endpoint:
        if self.request.tcp is not None:
            return Endpoint(host=self.request.tcp[0], port=self.request.tcp[1],
                            tls=self.request.tls)
        return Endpoint(socket=(self.request.socket or self._folder / "nbd.sock"))

    def command(self, program: str, keys_fd: int | None) -> list[str]:
        request = self.request
        threads = LOCAL_THREADS if request.local else REMOTE_THREADS
        options = ["--foreground", "--exit-with-parent", "--pidfile",
                   str(self._folder / "nbdkit.pid"), f"--threads={threads}",
                   *self.endpoint.nbdkit_options()]
        # --writable: nbdkit's cow filter keeps writes in a temporary file it deletes on exit;
        # the plugin below it stays read-only.
        options += ["--filter=cow"] if request.writable else ["--readonly"]
        plugin = ["python", str(PLUGIN), f"repo={request.location}",
                  f"snapshot={request.snapshot_id}",
                  f"python={sys.version_info.major}.{sys.version_info.minor}"]
        if keys_fd is not None:
            plugin.append(f"keys-fd={keys_fd}")
        if request.debug:
            plugin.append("debug=1")
        return [program, *options, *plugin]

    def start(self, program: str) -> None:
        """Start nbdkit and return once it accepts connections; ExportFailed if it ends first."""
        keys_fd = None
        if self.request.keys is not None:
            keys_fd, writer = os.pipe()
            os.write(writer, self.request.keys.master_key)
            os.close(writer)
        environment = {**os.environ, "PYTHONPATH": plugin_python_path()}
        try:
            self.process = subprocess.Popen(
                self.command(program, keys_fd), env=environment,
                pass_fds=() if keys_fd is None else (keys_fd,), stdin=subprocess.DEVNULL)
        finally:
            if keys_fd is not None:
                os.close(keys_fd)
        self._wait_ready()

    def _wait_ready(self) -> None:
        pidfile = self._folder / "nbdkit.pid"
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not (pidfile.exists() and pidfile.stat().st_size):
            status = self.process.poll()
            if status is not None:
                raise ExportFailed(f"nbdkit stopped (exit status {status}) before serving "
                                   f"snapshot {self.request.snapshot_id}: see its message "
                                   f"above")
            if time.monotonic() > deadline:
                self.stop()
                raise ExportFailed(f"nbdkit did not start serving within "
                                   f"{READY_TIMEOUT_S:.0f} s; stopped it")
            time.sleep(READY_POLL_S)
        if self.endpoint.socket is not None:
            # nbdkit binds with its own umask: the socket becomes its user's alone here (the
            # default one sits in a 0700 folder from the start).
            os.chmod(self.endpoint.socket, 0o600, follow_symlinks=False)
            status = os.lstat(self.endpoint.socket)
            self._socket_id = (status.st_dev, status.st_ino)

    def wait(self) -> int:
        return self.process.wait()

    def terminate(self) -> None:
        """Ask nbdkit to stop (it finishes the requests in flight)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        """Stop nbdkit if it runs, then remove the socket it bound and the private folder."""
        if self.process is not None:
            self.terminate()
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._remove_socket()
        shutil.rmtree(self._folder, ignore_errors=True)

    def _remove_socket(self) -> None:
        """nbdkit leaves its socket behind; remove it if it is still the one it bound."""
        if self._socket_id is None:
            return
        try:
            status = os.lstat(self.endpoint.socket)
        except FileNotFoundError:
            return
        if stat.S_ISSOCK(status.st_mode) and (status.st_dev, status.st_ino) == self._socket_id:
            os.unlink(self.endpoint.socket)
