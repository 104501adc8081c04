"""The ``diskvault`` command: a click group; errors become one line and an exit code."""

from __future__ import annotations

import io
import logging
import os
import signal
import sys

import click

from ..errors import DiskvaultError
from . import (copy_commands, demo, files_commands, maintenance_commands, mount_commands,
               repository_commands, snapshot_commands)
from .common import (DEBUG_FLAG, debug_enabled, debug_option, group_password_file_option,
                     group_repo_option)

# What a shell reports for a command that SIGPIPE ended, as `cat` in `cat big | head`.
EXIT_OUTPUT_CLOSED = 128 + signal.SIGPIPE


class OutputClosed(Exception):
    """The reader of our output went away (`diskvault cat latest | head`): a normal end.
    Raised in place of BrokenPipeError, which click's own handling would turn into exit 1."""


class DiskvaultGroup(click.Group):
    """A group whose every command also accepts --debug after its name."""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        cmd.params.append(debug_option())
        super().add_command(cmd, name)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            raise OutputClosed() from None


@click.group(cls=DiskvaultGroup, params=[debug_option()],
             context_settings={"help_option_names": ["-h", "--help"]})
@group_repo_option
@group_password_file_option
@click.version_option(package_name="diskvault")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Deduplicating, content-addressed backups of disk images and block devices."""
    logging.basicConfig(level=logging.DEBUG if debug_enabled(ctx) else logging.WARNING,
                        format="diskvault: warning: %(message)s")


for module in (repository_commands, snapshot_commands, demo, mount_commands,
               maintenance_commands, files_commands, copy_commands):
    module.register(cli)


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
