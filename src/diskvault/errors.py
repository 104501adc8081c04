"""The one hierarchy of errors a user reads; each class knows its exit code."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_LOCKED = 73
EXIT_IO = 74
EXIT_NO_PERMISSION = 77  # sysexits' EX_NOPERM
# `status --max-age`: a series is late. Distinct from 1 (damage) and 2 (bad input), so a
# monitor tells "late" from "broken".
EXIT_OVERDUE = 3


class DiskvaultError(Exception):
    """Something the user must look at; the CLI prints it as one line."""

    exit_code = EXIT_FAILURE


class BadInput(DiskvaultError):
    """The command was given something it cannot work with (a path, a name, an option)."""

    exit_code = EXIT_BAD_INPUT


class RepositoryNotFound(BadInput):
    pass


class NotARepository(BadInput):
    pass


class UnsupportedFormat(BadInput):
    pass


class SourceError(BadInput):
    pass


class SnapshotNotFound(BadInput):
    pass


class AmbiguousSnapshot(BadInput):
    pass


class TargetExists(BadInput):
    pass


class SeriesOverdue(DiskvaultError):
    """A series' newest snapshot is older than ``status --max-age`` allows, or it has none."""

    exit_code = EXIT_OVERDUE


class SourceChanged(DiskvaultError):
    """The source changed while it was read; the snapshot would not be consistent."""


class PointInTimeFailed(DiskvaultError):
    """The point-in-time view of a source, or a command run around its making, failed;
    nothing was read or recorded."""


class IncompleteStream(DiskvaultError):
    """An image read from a stream is empty or shorter than it must be (a producer that
    failed or was killed); it is not recorded, so it never becomes the series' latest."""


class ToolMissing(DiskvaultError):
    """A program or binding a source needs (qemu-nbd, libnbd's) is not installed; the
    message names the package."""


class SnapshotProtected(DiskvaultError):
    """delete was asked to remove a snapshot marked with ``diskvault protect``; nothing was
    removed."""


class RepositoryAppendOnly(DiskvaultError):
    """A command would delete from a repository marked append-only; nothing was changed."""

    exit_code = EXIT_NO_PERMISSION


class ObjectLocked(DiskvaultError):
    """S3 Object Lock refused to delete an object version (its retention or legal hold
    still holds); nothing more was deleted."""

    exit_code = EXIT_NO_PERMISSION


class SnapshotGone(DiskvaultError):
    """A snapshot this host saw in the repository is no longer there, and this host did not
    remove it: the repository was rolled back, or a record is withheld."""


class CorruptData(DiskvaultError):
    """Stored bytes do not match their digest, or a structure on disk cannot be parsed."""


class MissingChunk(CorruptData):
    pass


class IndexRebuildRefused(DiskvaultError):
    """The index would have had to be rebuilt while maintenance relied on it (a rebuild
    empties the reference counts kept beside it): the maintenance stopped instead."""


class RepositoryFull(DiskvaultError):
    """The repository's filesystem ran out of space; nothing half-written was kept."""

    exit_code = EXIT_IO


class RepositoryReadOnly(DiskvaultError):
    """A writer was asked to change a repository on read-only media, or one the user may
    read but not write; readers work there."""

    exit_code = EXIT_NO_PERMISSION


@dataclass(frozen=True)
class LockHolder:
    host: str
    pid: int
    command: str
    since: datetime
    process_start: str = ""


class RepositoryLocked(DiskvaultError):
    exit_code = EXIT_LOCKED

    def __init__(self, holder: LockHolder, running_backups: int = 0):
        """``running_backups``: the holder is one of that many registered backups (which
        break-lock does not remove: a dead one's registration expires)."""
        self.holder = holder
        others = running_backups - 1
        also = f" and {others} other backup{'s' * (others > 1)}" if others > 0 else ""
        if running_backups:
            next_step = ("a backup that is gone for good stops counting once its "
                         "registration expires, 5 minutes after its last renewal")
        else:
            next_step = "if that process is gone for good, run 'diskvault break-lock'"
        super().__init__(
            f"repository is locked by {holder.command} (pid {holder.pid} on {holder.host}, "
            f"since {holder.since:%Y-%m-%d %H:%M:%S} UTC){also}; retry with --lock-wait "
            f"SECONDS, or {next_step}"
        )



class LockLost(DiskvaultError):
    """The writer lock was taken over while its holder ran: it had not been refreshed for
    the stale time (the process paused or cut off from the store), so another host took it.
    The holder commits nothing more."""

    exit_code = EXIT_LOCKED

    def __init__(self, location: str, command: str, taken_by: LockHolder | None):
        how = (f"taken over by {taken_by.command} (pid {taken_by.pid} on {taken_by.host})"
               if taken_by else "removed (break-lock?)")
        super().__init__(
            f"the writer lock of {location} was {how} while {command} ran, after it had "
            f"gone unrefreshed for too long; nothing more was committed: run "
            f"{command.split()[0]} again")


class RegistrationLost(LockLost):
    """A backup's registration was removed as stale by an exclusive operation (it had not
    been renewed for the stale time): the backup records nothing."""

    def __init__(self, location: str, command: str):
        DiskvaultError.__init__(
            self, f"the registration of {command} in {location} was removed as stale by an "
                  f"exclusive operation (prune, compact, ...) after it had gone unrenewed for "
                  f"too long; nothing was recorded: run {command.split()[0]} again")


# -- object stores (store/backends/s3.py) --------------------------------------------------------

class ObjectStoreUnusable(BadInput):
    """An object store that cannot be used as configured: no or refused credentials, a
    missing bucket, an endpoint that does not answer, access denied."""


class ObjectStoreFailed(DiskvaultError):
    """Requests to the object store kept failing after the client's retries (5xx,
    throttling, dropped connections), or were refused for a reason not the user's."""

    exit_code = EXIT_IO


# -- repositories over SSH (store/backends/ssh.py, remote/) ----------------------------------

class RemoteUnusable(BadInput):
    """An ``ssh://`` repository that cannot be used as given: ssh cannot connect or log in,
    diskvault is missing on the far side, or something else answers there."""


class RemoteFailed(DiskvaultError):
    """The SSH connection to a repository broke, or its server failed, in mid-command."""

    exit_code = EXIT_IO


class AppendOnlyRefused(RepositoryReadOnly):
    """The far side serves the repository append-only (``serve-repository --append-only``)
    and refused to delete, overwrite or move an object; nothing was changed by it."""


# -- inside images (image/) ------------------------------------------------------------

class PartitionTableError(CorruptData):
    """The image has a partition table, but it is damaged or implausible."""


class NoSuchPartition(BadInput):
    """The user named a partition the image does not have."""


class UnknownFilesystem(BadInput):
    """The volume holds nothing this reader knows (swap, LUKS, zeros, an unsupported kind)."""


class DamagedFilesystem(CorruptData):
    """The filesystem's structures are damaged or malicious; the message names the path."""


class PathNotFound(BadInput):
    pass


class NotADirectory(BadInput):
    pass


class IsADirectory(BadInput):
    pass


# -- the mount (fuse/) -------------------------------------------------------------------

class MountpointUnusable(BadInput):
    """The mountpoint is missing, not a folder, not empty, or already a mount."""


class NotMounted(BadInput):
    """``umount`` was given a folder that holds no diskvault mount."""


class FuseUnavailable(DiskvaultError):
    """libfuse, fusermount or the kernel's /dev/fuse is missing on this machine."""


class MountBusy(DiskvaultError):
    """The mount is in use (an open file, a shell inside it), so it cannot be unmounted."""


class MountFailed(DiskvaultError):
    """The background mount process died before the mount came up; carries its exit code."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class NbdUnavailable(DiskvaultError):
    """nbdkit or its Python plugin, which ``serve`` exports snapshots with, is not installed."""


class ExportFailed(DiskvaultError):
    """The NBD server of ``serve`` stopped before it served, or failed while serving."""


# -- encryption (store/format/crypto.py, store/keys/key_file.py, store/keys/passphrase.py) --------------------

# restic exits 12 on a wrong password; the same code lets scripts written for it tell a
# mistyped or stale passphrase apart from damage.
EXIT_WRONG_PASSPHRASE = 12


class AuthenticationFailed(CorruptData):
    """A sealed record did not authenticate: damaged, altered, moved from another place or
    another repository, or sealed under another key. Never says which: it cannot know."""


class KeyFileDamaged(CorruptData):
    """The key file cannot be read as one: not diskvault's, truncated, or its checksum fails."""


class WrongPassphrase(DiskvaultError):
    """The passphrase does not open the repository's key file."""

    exit_code = EXIT_WRONG_PASSPHRASE


class PassphraseUnavailable(BadInput):
    """No passphrase could be had: none set in a non-interactive run, an unreadable file, a
    failing command, an empty answer, or two prompts that differ."""


class WrongRepositoryKey(BadInput):
    """A key export belongs to another repository than the one it is imported into."""


# -- change maps (store/backup/change_map.py, store/backup/changed_backup.py) ----------------------------

class ChangeMapWrong(DiskvaultError):
    """Bytes a change map called unchanged differ from the previous snapshot's."""
