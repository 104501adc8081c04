"""The ``diskvault`` command: a click group; errors become one line and an exit code."""

from __future__ import annotations

import io
import logging
import os
import signal
import sys

import click

from ..errors import DiskvaultError
from .common import (DEBUG_FLAG, debug_enabled, debug_option, group_password_file_option,
                     group_repo_option)
from .lazy import LazyCommand, LazyGroup
from .suggestions import suggestion

# What a shell reports for a command that SIGPIPE ended, as `cat` in `cat big | head`.
EXIT_OUTPUT_CLOSED = 128 + signal.SIGPIPE


class OutputClosed(Exception):
    """The reader of our output went away (`diskvault cat latest | head`): a normal end.
    Raised in place of BrokenPipeError, which click's own handling would turn into exit 1."""


# Every command: its module (imported only when it runs) and attribute, and its short help
# for `diskvault --help` (the first sentence of its docstring; tests/cli/test_startup.py
# checks that the two agree). A new command is one line here.
COMMANDS = {
    "init": LazyCommand("commands.repository:init", "Create a new, empty repository "
                        "(encrypted unless --encryption none)."),
    "config": LazyCommand("commands.repository:config", "Show the repository's settings, or "
                          "set its append-only mark."),
    "break-lock": LazyCommand("commands.repository:break_lock", "Remove the writer lock left "
                              "by a writer that crashed (use with care)."),
    "key": LazyCommand("commands.keys:key", "The key of an encrypted repository: keep an "
                       "export of it somewhere else."),
    "backup": LazyCommand("commands.backup:backup",
                          "Back up an image file, block device, NBD export or running QEMU "
                          "guest's drive (or '-': standard input) as a new snapshot."),
    "list": LazyCommand("commands.snapshots:list_snapshots", "List snapshots, oldest first."),
    "info": LazyCommand("commands.snapshots:info", "Show a snapshot's sizes and dedup figures "
                        "(or the repository's, without SNAPSHOT)."),
    "restore": LazyCommand("commands.restore:restore", "Restore a snapshot to a new sparse "
                           "file, an existing file, or a block device."),
    "cat": LazyCommand("commands.restore:cat", "Write a snapshot's image to standard output."),
    "diff": LazyCommand("commands.snapshots:diff", "List the byte ranges that differ between "
                        "two snapshots (from manifests only)."),
    "demo": LazyCommand("commands.demo:demo", "Run the main job on a built-in example: nightly "
                        "backups of a small ext4 image."),
    "mount": LazyCommand("commands.mount:mount", "Mount all snapshots (or just SNAPSHOT) "
                         "read-only at MOUNTPOINT."),
    "umount": LazyCommand("commands.mount:umount", "Unmount a diskvault mount (fails, saying "
                          "so, while files in it are in use)."),
    "serve": LazyCommand("commands.serve:serve", "Export SNAPSHOT as a read-only NBD block "
                         "device until stopped (Ctrl-C, SIGTERM)."),
    "serve-repository": LazyCommand("commands.remote:serve_repository", "Serve the "
                                    "repository at PATH to a diskvault client on standard "
                                    "input and output."),
    "delete": LazyCommand("commands.maintenance:delete", "Delete snapshots (id, id prefix, "
                          "'latest', or a whole series with --all-of-series); compact frees "
                          "the space."),
    "prune": LazyCommand("commands.maintenance:prune", "Remove the snapshots no --keep-* rule "
                         "keeps, per series; compact frees the space."),
    "protect": LazyCommand("commands.maintenance:protect", "Mark snapshots so that prune "
                           "keeps them and delete refuses them until unprotected."),
    "unprotect": LazyCommand("commands.maintenance:unprotect", "Remove the mark 'diskvault "
                             "protect' set."),
    "compact": LazyCommand("commands.maintenance:compact", "Give back the space of data no "
                           "snapshot uses (after delete or prune)."),
    "extend-retention": LazyCommand("commands.maintenance:extend_retention", "Extend the S3 "
                                    "Object Lock retention of every pack in use to the "
                                    "repository's days from now (compact does it too)."),
    "check": LazyCommand("commands.check:check", "Check that every snapshot can be "
                         "restored; exit 1 if anything is damaged."),
    "ls": LazyCommand("commands.files:ls", "List the volumes of a snapshot's image and their "
                      "filesystems, or, with LOCATION, a folder inside one like `ls -l` (a "
                      "file or symlink shows itself)."),
    "copy": LazyCommand("commands.copy:copy", "Copy snapshots (default: every one the "
                        "destination lacks) with their ids, names, times and tags; "
                        "only chunks the destination lacks are written."),
    "status": LazyCommand("commands.status:status", "Show each series' newest snapshot, its "
                          "age, its last failure and the last check."),
    "report": LazyCommand("commands.status:report", "Write a status page: each series' "
                          "snapshots, bytes per night, dedup, checks, failures."),
    "schedule": LazyCommand("commands.schedule:schedule", "Print or write the systemd units "
                            "or the crontab line that run a series' backups every night."),
    "pull": LazyCommand("commands.files:pull", "Copy a file or a whole folder out of a "
                        "snapshot's image to DESTINATION, like `cp -a`."),
    "completion": LazyCommand("shell.completion:completion", "Print the completion script for "
                              "SHELL (setup installs it; or, in ~/.bashrc: eval \"$(diskvault "
                              "completion bash)\")."),
    "version": LazyCommand("main:version", "Print diskvault's version (as --version and -V)."),
}


class DiskvaultGroup(LazyGroup):
    """A group whose every command also accepts --debug after its name."""

    def prepare(self, command: click.Command) -> None:
        command.params.append(debug_option())

    def resolve_command(self, ctx: click.Context, args: list[str]):
        """An unknown command is refused with the closest name, or with ours for a name
        borg or restic users type (snapshots, forget...)."""
        name = args[0]
        if (not ctx.resilient_parsing and not name.startswith("-")
                and self.get_command(ctx, name) is None):
            ctx.fail(f"No such command {name!r}. "
                     f"{suggestion(name, self.list_commands(ctx))}")
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            raise OutputClosed() from None


@click.group(cls=DiskvaultGroup, params=[debug_option()], lazy_commands=COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"]})
@group_repo_option
@group_password_file_option
@click.version_option(None, "-V", "--version", package_name="diskvault")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Deduplicating, content-addressed backups of disk images and block devices."""
    logging.basicConfig(level=logging.DEBUG if debug_enabled(ctx) else logging.WARNING,
                        format="diskvault: warning: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(_first_time_only())
        handler.addFilter(own_lines_unless_debug)
    harden_process()


def harden_process() -> None:
    """Before a command runs (not for --help): almost every one opens a repository and may
    unlock its key, so no diskvault process dumps core or lets the user's other processes
    read its memory, and the passphrase variables leave its environment (the mount runs
    for days; the passphrase command and fusermount are its children)."""
    from ..hardening import forbid_core_dumps
    from ..store.keys.passphrase import take_secret_variables

    take_secret_variables()
    forbid_core_dumps()


def _first_time_only():
    """A log filter that passes each distinct message once: a damaged table read by several
    steps of one command is reported once, not per step."""
    seen: set[str] = set()

    def first_time(record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message in seen:
            return False
        seen.add(message)
        return True

    return first_time


def own_lines_unless_debug(record: logging.LogRecord) -> bool:
    """Our warnings; a library's (boto3, urllib3, fusepy) only with --debug (which may come
    after the command name, so it is looked up when a line is logged) or when it is an
    error."""
    return (record.name.startswith("diskvault") or record.levelno >= logging.ERROR
            or logging.getLogger().level == logging.DEBUG)


@click.command()
def version() -> None:
    """Print diskvault's version (as --version and -V)."""
    from importlib.metadata import version as installed_version

    click.echo(f"diskvault, version {installed_version('diskvault')}")


def whole_writes_to_stdout() -> None:
    """Under PYTHONUNBUFFERED (python -u) stdout sits on a raw file, whose write may take
    only part of the bytes (interrupted by a signal, or the reader went away) and says so
    only in its return value, which print, click and ``cat`` ignore: the rest would be
    lost without a word. A buffer in between writes everything or raises."""
    if isinstance(sys.stdout.buffer, io.RawIOBase):
        sys.stdout = io.TextIOWrapper(io.BufferedWriter(sys.stdout.buffer),
                                      encoding=sys.stdout.encoding, errors=sys.stdout.errors,
                                      line_buffering=True)


def main(argv: list[str] | None = None) -> None:
    # The hot paths hand work between threads around C calls that release the GIL
    # (blake3, zstd, pread); a short switch interval lets the waiting thread take the
    # GIL back promptly instead of after the default 5 ms.
    sys.setswitchinterval(0.0002)
    args = sys.argv[1:] if argv is None else argv
    debug = DEBUG_FLAG in args
    whole_writes_to_stdout()
    try:
        cli.main(args=args, prog_name="diskvault", standalone_mode=False)
        sys.stdout.flush()  # output still buffered meets a closed pipe here, not at exit
    except (OutputClosed, BrokenPipeError):
        # Python's last flush at exit must not meet the closed pipe again and complain.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(EXIT_OUTPUT_CLOSED)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except click.exceptions.Abort:
        click.echo("diskvault: aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("diskvault: interrupted", err=True)
        sys.exit(130)
    except DiskvaultError as error:
        if debug:
            raise
        click.echo(f"diskvault: error: {error}", err=True)
        sys.exit(error.exit_code)
    except OSError as error:
        if debug:
            raise
        where = f" ({error.filename})" if error.filename else ""
        click.echo(f"diskvault: error: {error.strerror or error}{where}", err=True)
        sys.exit(1)
    except Exception as error:  # a bug: still one line, the traceback with --debug
        if debug:
            raise
        click.echo(f"diskvault: internal error: {type(error).__name__}: {error} (rerun with "
                   f"--debug for the traceback, and please report it)", err=True)
        sys.exit(1)
    sys.exit(0)
