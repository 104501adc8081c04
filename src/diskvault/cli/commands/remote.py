"""serve-repository: the far side of an ``ssh://`` repository, started by the client's ssh
or by a ``command=`` line in authorized_keys (docs/ssh.md)."""

from __future__ import annotations

import os
from pathlib import Path

import click


@click.command("serve-repository")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--append-only", is_flag=True,
              help="Refuse to delete, overwrite or move anything but the reader registrations, "
                   "whatever the client asks (for authorized_keys).")
def serve_repository(path: Path, append_only: bool) -> None:
    """Serve the repository at PATH to a diskvault client on standard input and output.

    Not typed by hand: a client given -r ssh://USER@HOST/PATH runs it over ssh. To let a
    host back up but never delete, force it in that host's line of authorized_keys:
    command="diskvault serve-repository --append-only /backups/vm1",restrict ssh-ed25519 ...
    """
    from ...errors import BadInput
    from ...remote.server import RepositoryServer

    if os.isatty(0):
        raise BadInput("serve-repository answers a diskvault client over ssh, not a terminal: "
                       "give the client -r ssh://USER@HOST/PATH (docs/ssh.md)")
    channel_in, channel_out = _take_channel()
    with channel_in, channel_out:
        RepositoryServer(path, append_only, channel_in, channel_out).serve()


def _take_channel():
    """Standard input and output as the channel, and the process's own 0 and 1 pointed
    elsewhere (/dev/null, standard error), so that nothing printed by mistake ever lands
    inside a frame."""
    channel_in = os.fdopen(os.dup(0), "rb")
    channel_out = os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    return channel_in, channel_out
