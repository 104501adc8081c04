"""`diskvault serve`: a snapshot exported through nbdkit, read by real NBD clients."""

from __future__ import annotations

import os
import random
import stat
import subprocess
from pathlib import Path

import pytest

from diskvault.store.format.config import REPOKEY_MODE

from ..conftest import TEST_PASSPHRASE, init_args, run_cli
from .certificates import make_certificates
from .conftest import (IMAGE_BYTES, LAYOUT, backed_up, file_sha256, nbd_sha256, require_tools,
                       write_layout)

MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def tools():
    require_tools("nbdkit", "nbdinfo", "nbdcopy")


@pytest.fixture
def snapshot(tmp_path, encryption):
    """(repository folder, image, snapshot id) of a layout image backed up once."""
    repo = tmp_path / "repo"
    run_cli("init", "-r", str(repo), *init_args(encryption), check=True)
    image = write_layout(tmp_path / "disk.img")
    return repo, image, backed_up(repo, image)


def test_nbdcopy_of_the_export_equals_the_snapshot_and_sigterm_removes_the_socket(snapshot,
                                                                                   serve):
    repo, image, snapshot_id = snapshot
    served = serve("-r", str(repo), snapshot_id[:8])
    socket = Path(served.info["socket"])
    assert served.uri == f"nbd+unix:///?socket={socket}"
    assert served.info["snapshot"] == snapshot_id and served.info["size"] == IMAGE_BYTES
    assert nbd_sha256(served.uri) == file_sha256(image)
    status, stderr = served.stop()
    assert status == 0, stderr
    assert not socket.exists() and not socket.parent.exists()


@pytest.mark.parametrize("encryption", [REPOKEY_MODE])
def test_encrypted_export_keeps_passphrase_and_key_out_of_nbdkit_argv_and_environment(
        snapshot, serve):
    if os.geteuid() != 0:
        pytest.skip("reading /proc/PID/environ of a process that is not dumpable needs root")
    repo, image, snapshot_id = snapshot
    served = serve("-r", str(repo), "vm")
    nbdkit = served.nbdkit_pid()
    # nbdkit holds the key, so it is not dumpable: /proc/PID/* is root's; we are root.
    shown = Path(f"/proc/{nbdkit}/cmdline").read_bytes() + Path(
        f"/proc/{nbdkit}/environ").read_bytes()
    assert TEST_PASSPHRASE.encode() not in shown and b"DISKVAULT_PASSWORD" not in shown
    assert b"keys-fd=" in shown and b"master" not in shown
    assert b"--threads=4\0" in shown  # a local repository: few threads (the GIL)
    assert nbd_sha256(served.uri) == file_sha256(image)


def nbdinfo_map(uri: str) -> list[tuple[int, int, str]]:
    output = subprocess.run(["nbdinfo", "--map", uri], capture_output=True, text=True,
                            check=True).stdout
    extents = []
    for line in output.splitlines():
        start, length, _, description = line.split(maxsplit=3)
        extents.append((int(start), int(length), description))
    return extents


def test_block_status_reports_the_zero_runs_as_holes(snapshot, serve):
    repo, _, snapshot_id = snapshot
    served = serve("-r", str(repo), snapshot_id)
    extents = nbdinfo_map(served.uri)
    assert sum(length for _, length, _ in extents) == IMAGE_BYTES
    data = [(start, start + length) for start, length, kind in extents if kind == "data"]
    holes = [(start, start + length) for start, length, kind in extents if kind == "hole,zero"]
    assert len(data) + len(holes) == len(extents)
    # The chunker may cut a chunk holding data and zeros, so data may spill into the zeros
    # nearby, but every byte of LAYOUT is data and the long runs between are holes.
    for offset, length in LAYOUT:
        assert any(start <= offset and offset + length <= end for start, end in data)
    for gap_start, gap_end in ((4 * MiB, 7 * MiB), (10 * MiB, IMAGE_BYTES)):
        assert any(start <= gap_start and gap_end <= end for start, end in holes)


def test_socket_is_private_to_its_user(snapshot, serve, tmp_path):
    repo, _, snapshot_id = snapshot
    path = tmp_path / "vm.sock"
    served = serve("-r", str(repo), snapshot_id, "--socket", str(path))
    status = os.lstat(path)
    assert stat.S_ISSOCK(status.st_mode) and stat.S_IMODE(status.st_mode) == 0o600
    assert status.st_uid == os.geteuid()
    assert served.uri == f"nbd+unix:///?socket={path}"
    assert served.stop()[0] == 0 and not path.exists()


def test_existing_socket_path_is_refused_and_left_alone(snapshot, tmp_path):
    repo, _, snapshot_id = snapshot
    taken = tmp_path / "taken"
    taken.write_text("someone's file")
    result = run_cli("serve", "-r", str(repo), snapshot_id, "--socket", str(taken))
    assert result.returncode == 2 and taken.read_text() == "someone's file"
    assert result.stderr.decode().splitlines() == [
        f"diskvault: error: --socket {taken} already exists; serve makes a new socket there: "
        f"give a path that does not exist yet"]


def listening_addresses(port: int) -> set[str]:
    """The local addresses (hex, as /proc/net/tcp writes them) listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if int(hex_port, 16) == port and fields[3] == "0A":  # TCP_LISTEN
                found.add(address)
    return found


def free_port() -> int:
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_tcp_export_listens_on_localhost_only(snapshot, serve):
    repo, image, snapshot_id = snapshot
    port = free_port()
    served = serve("-r", str(repo), snapshot_id, "--tcp", str(port))
    assert served.uri == f"nbd://127.0.0.1:{port}" and served.info["socket"] is None
    assert listening_addresses(port) == {"0100007F"}  # 127.0.0.1
    assert nbd_sha256(served.uri) == file_sha256(image)


def test_sigkill_of_the_server_mid_read_gives_the_client_errors_never_wrong_bytes(
        tmp_path, serve):
    repo = tmp_path / "repo"
    run_cli("init", "-r", str(repo), "--encryption", "none", check=True)
    image = tmp_path / "big.img"
    image.write_bytes(random.Random(1).randbytes(48 * MiB))
    served = serve("-r", str(repo), backed_up(repo, image))
    # nbdcopy writes into a pipe we read slowly, so it is mid-copy when the server dies.
    with subprocess.Popen(["nbdcopy", "--threads=1", "--requests=4", served.uri, "-"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as copy:
        received = copy.stdout.read(MiB)
        os.kill(served.nbdkit_pid(), 9)
        received += copy.stdout.read()
        stderr = copy.stderr.read().decode()
    assert copy.returncode != 0 and len(received) < image.stat().st_size
    assert received == image.read_bytes()[:len(received)]
    assert "nbd_" in stderr or "error" in stderr.lower()
    status, serve_stderr = served.stop()
    assert status != 0 and "stopped unexpectedly" in serve_stderr
    assert not Path(served.info["socket"]).exists()


def test_damaged_chunk_is_an_io_error_to_the_client_and_one_line_in_the_log(snapshot, serve):
    repo, _, snapshot_id = snapshot
    pack = max((repo / "packs").rglob("*.pack"), key=lambda path: path.stat().st_size)
    with open(pack, "r+b") as handle:  # a byte in the first chunk records, not the footer
        handle.seek(1000)
        byte = handle.read(1)
        handle.seek(1000)
        handle.write(bytes([byte[0] ^ 0x40]))
    served = serve("-r", str(repo), snapshot_id)
    copy = subprocess.run(["nbdcopy", served.uri, "-"], capture_output=True)
    assert copy.returncode != 0 and b"Input/output error" in copy.stderr
    assert served.process.poll() is None  # one bad chunk does not end the export
    status, stderr = served.stop()
    assert status == 0
    assert "Traceback" not in stderr and "snapshot" in stderr and "offset" in stderr


def test_qcow2_overlay_over_the_export_takes_the_writes_and_the_export_is_unchanged(
        snapshot, serve, tmp_path):
    require_tools("qemu-img", "qemu-io")
    repo, image, snapshot_id = snapshot
    served = serve("-r", str(repo), snapshot_id)
    overlay = tmp_path / "overlay.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", served.uri, "-F", "raw",
                    str(overlay)], check=True)
    io = subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0xab 5M 64k",
                         "-c", "read -P 0xab 5M 64k", str(overlay)], capture_output=True,
                        text=True, check=True)
    assert "Pattern verification failed" not in io.stdout
    assert nbd_sha256(served.uri) == file_sha256(image)
    # The overlay holds the write; the rest still comes from the export.
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "read -P 0 4M 1M", str(overlay)],
                   check=True, capture_output=True)


def test_writable_export_takes_writes_and_forgets_them_on_exit(snapshot, serve):
    require_tools("qemu-io")
    repo, image, snapshot_id = snapshot
    served = serve("-r", str(repo), snapshot_id, "--writable")
    assert served.info["writable"] is True
    io = subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0xcd 0 1M",
                         "-c", "read -P 0xcd 0 1M", served.uri], capture_output=True, text=True)
    assert io.returncode == 0 and "Pattern verification failed" not in io.stdout, io.stdout
    assert served.stop()[0] == 0
    again = serve("-r", str(repo), snapshot_id)
    assert nbd_sha256(again.uri) == file_sha256(image)


def test_read_only_export_refuses_writes(snapshot, serve):
    require_tools("qemu-io")
    repo, _, snapshot_id = snapshot
    served = serve("-r", str(repo), snapshot_id)
    io = subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0xcd 0 64k", served.uri],
                        capture_output=True, text=True)
    assert io.returncode != 0 or "wrote" not in io.stdout


def test_missing_nbdkit_is_one_line_naming_the_packages(snapshot, tmp_path):
    repo, _, snapshot_id = snapshot
    empty = tmp_path / "bin"
    empty.mkdir()
    result = run_cli("serve", "-r", str(repo), snapshot_id, env={"PATH": str(empty)})
    assert result.returncode == 1
    assert result.stderr.decode().strip().splitlines() == [
        "diskvault: error: serve needs nbdkit, which is not installed: install the Debian packages "
        "nbdkit and nbdkit-plugin-python"]


def test_after_the_export_dies_an_open_overlay_fails_reads_it_lacks_and_serves_its_own(
        snapshot, serve, tmp_path):
    """What a running guest sees: QEMU's block layer with the overlay open when nbdkit dies."""
    require_tools("qemu-img", "qemu-io")
    repo, _, snapshot_id = snapshot
    served = serve("-r", str(repo), snapshot_id)
    overlay = tmp_path / "overlay.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", served.uri, "-F", "raw",
                    str(overlay)], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 1M 64k", str(overlay)],
                   check=True, capture_output=True)
    with subprocess.Popen(["qemu-io", "-f", "qcow2", str(overlay)], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as io:
        io.stdin.write("read -P 0x5a 1M 64k\n")
        io.stdin.flush()
        for line in io.stdout:  # until the overlay is open and read
            if "read 65536/65536 bytes" in line:
                break
        else:
            raise AssertionError("qemu-io ended before its first read")
        # Now the export dies under the open overlay.
        os.kill(served.nbdkit_pid(), 9)
        output, _ = io.communicate("read 0 64k\nread -P 0x5a 1M 64k\nquit\n", timeout=120)
    assert "read failed: Input/output error" in output, output  # not zeros from the export
    assert output.count("read 65536/65536 bytes") == 1  # the overlay's own block still reads
    assert "Pattern verification" not in output


def test_tls_psk_export_needs_the_key_and_reads_back(snapshot, serve, tmp_path):
    repo, image, snapshot_id = snapshot
    keys = tmp_path / "keys.psk"
    keys.write_text(f"alice:{os.urandom(32).hex()}\n")
    keys.chmod(0o600)
    port = free_port()
    served = serve("-r", str(repo), snapshot_id, "--tcp", str(port), "--tls-psk", str(keys))
    assert served.uri == f"nbds://alice@127.0.0.1:{port}/?tls-psk-file={keys}"
    assert served.info["tls"] is True
    assert nbd_sha256(served.uri) == file_sha256(image)
    plain = subprocess.run(["nbdinfo", "--size", f"nbd://127.0.0.1:{port}"],
                           capture_output=True, text=True)
    assert plain.returncode != 0 and "TLS" in plain.stderr


def test_tls_certificate_export_reads_back_only_for_a_client_that_trusts_its_ca(snapshot, serve,
                                                                               tmp_path):
    repo, image, snapshot_id = snapshot
    server, client, stranger = make_certificates(tmp_path)
    port = free_port()
    served = serve("-r", str(repo), snapshot_id, "--tcp", str(port), "--tls-cert", str(server))
    assert served.uri == f"nbds://127.0.0.1:{port}/?tls-certificates={server}"
    assert served.info["tls"] is True
    assert nbd_sha256(f"nbds://127.0.0.1:{port}/?tls-certificates={client}") == \
        file_sha256(image)
    # (libnbd 1.14 given no folder at all encrypts but checks nothing: the guide says so)
    for refused in (f"nbds://127.0.0.1:{port}/?tls-certificates={stranger}",  # another CA
                    f"nbd://127.0.0.1:{port}"):                              # no TLS at all
        result = subprocess.run(["nbdinfo", "--size", refused], capture_output=True, text=True)
        assert result.returncode != 0, refused


def test_tls_cert_folder_without_its_files_is_refused_in_one_line(snapshot, tmp_path):
    repo, _, snapshot_id = snapshot
    folder = tmp_path / "certs"
    folder.mkdir()
    (folder / "ca-cert.pem").write_text("")
    result = run_cli("serve", "-r", str(repo), snapshot_id, "--tcp", "10809", "--tls-cert",
                     str(folder))
    assert result.returncode == 2
    assert result.stderr.decode().strip().splitlines() == [
        f"diskvault: error: --tls-cert {folder}: server-cert.pem, server-key.pem missing; the "
        f"folder needs ca-cert.pem, server-cert.pem, server-key.pem (docs/instant-recovery.md)"]
