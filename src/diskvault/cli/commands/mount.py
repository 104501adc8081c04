"""mount and umount: snapshots as read-only image files (and partition files) over FUSE."""

from __future__ import annotations

import logging
import os
from functools import partial
from pathlib import Path

import click

from ...fuse.daemon import fork_mount_process, open_log_file, stderr_to_log
from ...fuse.logs import configure_logging, syslog_available
from ...fuse.preflight import check_allow_other, check_mountpoint, load_fuse_binding
from ...fuse.serve import serve
from ...fuse.unmount import unmount
from ...store.format.snapshots import SnapshotRecord
from ...store.host.durable import make_private_folder
from ...store.host.user_folders import user_state_folder
from ..options.completers import complete_snapshot
from ..common import debug_enabled, json_option, opened, repo_option
from ..output.formatting import print_json

log = logging.getLogger(__name__)


@click.command()
@repo_option
@click.argument("mountpoint", type=click.Path(path_type=Path))
@click.argument("snapshot", required=False, shell_complete=complete_snapshot)
@click.option("--foreground", is_flag=True,
              help="Stay in the foreground, logging to stderr, until unmounted (Ctrl-C).")
@click.option("--allow-other", is_flag=True, help="Let other users read the mount too (the "
              "files inside images as their modes allow; the image files stay yours).")
@click.option("--share-images", is_flag=True,
              help="With --allow-other: let other users read the image and partition files "
                   "too, and so every byte of the disk, whatever the modes of the files in it; "
                   "and the files of FAT, exFAT and NTFS filesystems, which record no owners.")
@click.option("--log-file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Where the background mount logs (default: syslog, or without one "
                   "~/.local/state/diskvault/mount.log; --foreground: stderr).")
@json_option
@click.pass_context
def mount(ctx: click.Context, repo, mountpoint: Path, snapshot, foreground, allow_other,
          share_images, log_file, as_json) -> None:
    """Mount all snapshots (or just SNAPSHOT) read-only at MOUNTPOINT.

    All: MOUNTPOINT/<series>/<time>/<image> and <series>/latest. One: MOUNTPOINT/<image>.
    Each partition of an MBR or GPT disk is a file of its own: <image>.p1, <image>.p2 ...
    The files inside the image's filesystems are folders: <image>.files/p1/ ... (docs/mount.md).
    """
    if share_images and not allow_other:
        raise click.UsageError("--share-images shares the image files with other users, "
                               "which only --allow-other lets in: give both, or neither")
    where = check_mountpoint(mountpoint)
    load_fuse_binding()
    if allow_other:
        check_allow_other()
    debug = debug_enabled(ctx)
    with opened(repo) as repository:
        repository.refuse_inside(Path(where), "mountpoint")
        record = repository.find_snapshot(snapshot) if snapshot else None
        serve_here = partial(serve, record=record, mountpoint=where, allow_other=allow_other,
                             share_images=share_images)
        if foreground:
            configure_logging(where, False, debug)
            serve_here(repository, on_ready=partial(_ready_in_foreground, record, where,
                                                    as_json))
            return
        root, keys = repository.location, repository.unlocked_keys()
    if log_file is None and not syslog_available():
        log_file = _default_log_file()
    if _serve_in_background(serve_here, root, keys, where, log_file, debug):
        if as_json:
            print_json(_mount_json(record, where, log_file))
            return
        logged = "" if log_file is None else f"; its log is {log_file}"
        click.echo(f"mounted {_what(record)} at {where}{logged}; unmount with 'diskvault "
                   f"umount {where}'", err=True)


def _serve_in_background(serve_here, root: str, keys, where: str, log_file: Path | None,
                         debug: bool) -> bool:
    """Fork: True in the parent, once the mount is live; the child serves until unmounted
    (reopening the repository with the keys the parent unlocked), then returns False."""
    log_fd = None if log_file is None else open_log_file(log_file)
    in_child = fork_mount_process(where)
    if not in_child:
        if log_fd is not None:
            os.close(log_fd)
        return True
    configure_logging(where, log_fd is None and syslog_available(), debug)
    with opened(root, keys=keys) as repository:
        serve_here(repository, on_ready=lambda: _announce(log_fd, where))
    return False


def _announce(log_fd: int | None, where: str) -> None:
    """The background mount is live: its stderr leaves the parent's pipe for the log."""
    with stderr_to_log(log_fd):
        log.info("mounted at %s (pid %d)", where, os.getpid())


def _default_log_file() -> Path:
    """Where a background mount logs on a machine without syslog (a container): the user's
    state folder, so that the log of damaged data and failed reads is kept."""
    folder = user_state_folder()
    folder.parent.mkdir(parents=True, exist_ok=True)
    make_private_folder(folder)
    return folder / "mount.log"


def _ready_in_foreground(record: SnapshotRecord | None, where: str, as_json: bool) -> None:
    log.info("mounted at %s (pid %d)", where, os.getpid())
    if as_json:
        print_json(dict(_mount_json(record, where, None), log="stderr", pid=os.getpid()))


def _mount_json(record: SnapshotRecord | None, where: str, log_file: Path | None) -> dict:
    return {"mountpoint": where, "snapshot": record.id if record else None,
            "log": str(log_file) if log_file else ("syslog" if syslog_available() else None)}


def _what(record: SnapshotRecord | None) -> str:
    if record is None:
        return "all snapshots"
    return f"snapshot {record.short_id} ({record.name}, {record.time_label})"


@click.command()
@click.argument("mountpoint", type=click.Path(path_type=Path))
@json_option
def umount(mountpoint: Path, as_json: bool) -> None:
    """Unmount a diskvault mount (fails, saying so, while files in it are in use)."""
    unmount(mountpoint)
    if as_json:
        print_json({"mountpoint": os.path.realpath(mountpoint), "unmounted": True})
