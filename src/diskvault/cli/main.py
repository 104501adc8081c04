"""The ``diskvault`` command: a click group; errors become one line and an exit code."""

from __future__ import annotations

import logging
import sys

import click

from ..store.errors import DiskvaultError
from . import (demo, files_commands, maintenance_commands, mount_commands, repository_commands,
               snapshot_commands)
from .common import DEBUG_FLAG, debug_enabled, debug_option, group_repo_option


class DiskvaultGroup(click.Group):
    """A group whose every command also accepts --debug after its name."""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        cmd.params.append(debug_option())
        super().add_command(cmd, name)


@click.group(cls=DiskvaultGroup, params=[debug_option()],
             context_settings={"help_option_names": ["-h", "--help"]})
@group_repo_option
@click.version_option(package_name="diskvault")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Deduplicating, content-addressed backups of disk images and block devices."""
    logging.basicConfig(level=logging.DEBUG if debug_enabled(ctx) else logging.WARNING,
                        format="diskvault: warning: %(message)s")


for module in (repository_commands, snapshot_commands, demo, mount_commands,
               maintenance_commands, files_commands):
    module.register(cli)


def main(argv: list[str] | None = None) -> None:
    # The hot paths hand work between threads around C calls that release the GIL
    # (blake3, zstd, pread); a short switch interval lets the waiting thread take the
    # GIL back promptly instead of after the default 5 ms.
    sys.setswitchinterval(0.0002)
    args = sys.argv[1:] if argv is None else argv
    debug = DEBUG_FLAG in args
    try:
        cli.main(args=args, prog_name="diskvault", standalone_mode=False)
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
    except BrokenPipeError:
        sys.stderr.close()  # the reader went away (e.g. `cat | head`): not an error to report
        sys.exit(1)
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
