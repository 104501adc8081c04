"""serve: a snapshot exported as an NBD block device, for QEMU, qemu-img, nbdcopy and the
kernel's NBD client (docs/instant-recovery.md)."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
from pathlib import Path

import click

from ...errors import BadInput, ExportFailed
from ...nbd.server import (ExportRequest, NbdServer, Tls, find_nbdkit, parse_tcp,
                           read_certificate_folder, read_psk_file)
from ..common import debug_enabled, json_option, opened, repo_option
from ..output.formatting import warn


@click.command()
@repo_option
@click.argument("snapshot")
@click.option("--socket", "socket_path", type=click.Path(path_type=Path, dir_okay=False),
              default=None, help="Listen on this Unix socket (created 0600; default: a "
                                 "private folder in $XDG_RUNTIME_DIR or /tmp).")
@click.option("--tcp", metavar="[HOST:]PORT", default=None,
              help="Listen on TCP instead, on 127.0.0.1 unless HOST is given.")
@click.option("--tls-psk", "psk_file", type=click.Path(path_type=Path, dir_okay=False),
              default=None, help="With --tcp: require TLS, with the pre-shared keys of this "
                                 "file (USER:HEXKEY lines, as psktool makes them).")
@click.option("--tls-cert", "certificates", type=click.Path(path_type=Path, file_okay=False),
              default=None, help="With --tcp: require TLS with X.509 certificates from this "
                                 "folder (ca-cert.pem, server-cert.pem, server-key.pem).")
@click.option("--writable", is_flag=True,
              help="Accept writes into a temporary overlay, discarded when serve stops; "
                   "the repository is never written.")
@json_option
@click.pass_context
def serve(ctx: click.Context, repo, snapshot, socket_path, tcp, psk_file, certificates,
          writable, as_json) -> None:
    """Export SNAPSHOT as a read-only NBD block device until stopped (Ctrl-C, SIGTERM).

    Prints the NBD URI (nbd+unix:///?socket=PATH, or nbd://HOST:PORT with --tcp, nbds://
    with --tls-psk or --tls-cert) once clients can connect. Zero runs are reported as holes
    (block status), so qemu-img and nbdcopy skip them; a damaged chunk is an I/O error to the
    client, never wrong bytes.
    """
    endpoint_tcp, tls = _listen_options(socket_path, tcp, psk_file, certificates)
    program = find_nbdkit()
    with opened(repo) as repository:
        record = repository.find_snapshot(snapshot)
        if socket_path is not None:
            repository.refuse_inside(socket_path, "socket")
            socket_path = socket_path.absolute()
        # The plugin reopens the repository: a local one by its absolute folder.
        location = (str(repository.location) if repository.root is None
                    else os.path.abspath(repository.root))
        request = ExportRequest(location, record.id, repository.unlocked_keys(), socket_path,
                                endpoint_tcp, tls, writable, debug_enabled(ctx),
                                local=repository.root is not None)
    _serve_until_stopped(NbdServer(request), program, record, as_json)


def _listen_options(socket_path: Path | None, tcp: str | None, psk_file: Path | None,
                    certificates: Path | None) -> tuple[tuple[str, int] | None, Tls | None]:
    """(host, port) and TLS from --socket, --tcp, --tls-psk and --tls-cert, checked
    together."""
    if socket_path is not None and tcp is not None:
        raise click.UsageError("--socket and --tcp choose where to listen: give one of them")
    if psk_file is not None and certificates is not None:
        raise click.UsageError("--tls-psk and --tls-cert are two kinds of TLS: give one")
    if (psk_file is not None or certificates is not None) and tcp is None:
        raise click.UsageError("--tls-psk and --tls-cert secure a TCP export: give --tcp too")
    if socket_path is not None and os.path.lexists(socket_path):
        raise BadInput(f"--socket {socket_path} already exists; serve makes a new socket "
                       f"there: give a path that does not exist yet")
    endpoint_tcp = parse_tcp(tcp) if tcp is not None else None
    tls = (read_psk_file(psk_file) if psk_file is not None
           else read_certificate_folder(certificates) if certificates is not None else None)
    if endpoint_tcp is not None and tls is None and not _is_loopback(endpoint_tcp[0]):
        warn(f"serving on {endpoint_tcp[0]} without TLS: whoever reaches the port reads the "
             f"whole disk; add --tls-cert DIR or --tls-psk FILE")
    return endpoint_tcp, tls


def _serve_until_stopped(server: NbdServer, program: str, record, as_json: bool) -> None:
    """Run nbdkit until SIGTERM, SIGINT or SIGHUP (then exit 0) or until it dies (then
    ExportFailed); its socket and folder are removed either way."""
    stopping = []

    def stop_on_signal(signum, _frame) -> None:
        stopping.append(signum)
        server.terminate()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, stop_on_signal)
    try:
        server.start(program)
        if stopping:  # a signal came while nbdkit started
            server.terminate()
        _announce(server, record, as_json)
        status = server.wait()
    finally:
        server.stop()
    if status != 0 and not stopping:
        raise ExportFailed(f"nbdkit serving snapshot {record.short_id} stopped unexpectedly "
                           f"({_how(status)}); clients now get I/O errors")


def _announce(server: NbdServer, record, as_json: bool) -> None:
    endpoint = server.endpoint
    if as_json:
        click.echo(json.dumps({"uri": endpoint.uri, "snapshot": record.id, "size": record.size,
                    "socket": None if endpoint.socket is None else str(endpoint.socket),
                    "host": endpoint.host, "port": endpoint.port,
                    "tls": endpoint.tls is not None, "writable": server.request.writable,
                    "pid": os.getpid()}))
    else:
        mode = "writable (writes discarded on exit)" if server.request.writable else "read-only"
        click.echo(f"serving snapshot {record.short_id} ({record.name}, {record.time_label}) "
                   f"{mode}; stop with Ctrl-C or SIGTERM", err=True)
        click.echo(endpoint.uri)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _how(status: int) -> str:
    return f"killed by signal {-status}" if status < 0 else f"exit status {status}"
