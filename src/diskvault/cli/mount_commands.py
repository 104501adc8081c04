"""mount and umount: snapshots as read-only image files (and partition files) over FUSE."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from ..fuse.daemon import start_detached, stderr_to_log
from ..fuse.logs import configure_logging, syslog_available
from ..fuse.preflight import check_allow_other, check_mountpoint, load_fusepy
from ..fuse.serve import serve
from ..fuse.unmount import unmount
from ..store.snapshots import SnapshotRecord
from .common import KEY_FD_VARIABLE, debug_enabled, opened, repo_option
from .output import warn

log = logging.getLogger(__name__)


@click.command()
@repo_option
@click.argument("mountpoint", type=click.Path(path_type=Path))
@click.argument("snapshot", required=False)
@click.option("--foreground", is_flag=True,
              help="Stay in the foreground, logging to stderr, until unmounted (Ctrl-C).")
@click.option("--allow-other", is_flag=True, help="Let other users read the mount too (the "
              "files inside images as their modes allow; the image files stay yours).")
@click.option("--share-images", is_flag=True,
              help="With --allow-other: let other users read the image and partition files "
                   "too, and so every byte of the disk, whatever the modes of the files in it; "
                   "and the files of FAT, exFAT and NTFS filesystems, which record no owners.")
@click.option("--log-file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Where the background mount logs (default: syslog; --foreground: stderr).")
@click.option("--daemon", "as_daemon", is_flag=True, hidden=True,
              help="Internal: the background process that `mount` starts.")
@click.pass_context
def mount(ctx: click.Context, repo, mountpoint: Path, snapshot, foreground, allow_other,
          share_images, log_file, as_daemon) -> None:
    """Mount all snapshots (or just SNAPSHOT) read-only at MOUNTPOINT.

    All: MOUNTPOINT/<series>/<time>/<image> and <series>/latest. One: MOUNTPOINT/<image>.
    Each partition of an MBR or GPT disk is a file of its own: <image>.p1, <image>.p2 ...
    The files inside the image's filesystems are folders: <image>.files/p1/ ... (docs/mount.md).
    """
    if share_images and not allow_other:
        raise click.UsageError("--share-images shares the image files with other users, "
                               "which only --allow-other lets in: give both, or neither")
    where = check_mountpoint(mountpoint)
    load_fusepy()
    if allow_other:
        check_allow_other()
    debug = debug_enabled(ctx)
    with opened(repo) as repository:
        repository.refuse_inside(Path(where), "mountpoint")
        record = repository.find_snapshot(snapshot) if snapshot else None
        if foreground or as_daemon:
            to_syslog = as_daemon and log_file is None and syslog_available()
            configure_logging(where, to_syslog, debug)
            serve(repository, record, where, allow_other,
                  on_ready=lambda: _announce(as_daemon, log_file, where),
                  share_images=share_images)
            return
        root = repository.location  # a local folder is resolved already
        keys = repository.unlocked_keys()
    if log_file is None and not syslog_available():
        warn("this machine has no syslog (/dev/log), so the mount's log (damaged data, "
             "failed reads) is lost; keep it with --log-file PATH")
    argv = [sys.executable, "-m", "diskvault", *(["--debug"] if debug else []), "mount",
            "-r", root, where, *([record.id] if record else []), "--daemon",
            *(["--allow-other"] if allow_other else []),
            *(["--share-images"] if share_images else []),
            *(["--log-file", os.path.abspath(log_file)] if log_file else [])]
    start_detached(argv, where, secret=keys.master_key if keys else None,
                   secret_fd_variable=KEY_FD_VARIABLE)
    click.echo(f"mounted {_what(record)} at {where}; unmount with 'diskvault umount {where}'",
               err=True)


def _announce(as_daemon: bool, log_file: Path | None, where: str) -> None:
    if not as_daemon:
        log.info("mounted at %s (pid %d)", where, os.getpid())
        return
    with stderr_to_log(log_file):
        log.info("mounted at %s (pid %d)", where, os.getpid())


def _what(record: SnapshotRecord | None) -> str:
    if record is None:
        return "all snapshots"
    return f"snapshot {record.short_id} ({record.name}, {record.time_label})"


@click.command()
@click.argument("mountpoint", type=click.Path(path_type=Path))
def umount(mountpoint: Path) -> None:
    """Unmount a diskvault mount (fails, saying so, while files in it are in use)."""
    unmount(mountpoint)


def register(group: click.Group) -> None:
    group.add_command(mount)
    group.add_command(umount)
