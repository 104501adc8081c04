"""Shell completion: the ``completion`` command that prints the script for bash, zsh or
fish (click's own) for the whole command tree; what each argument completes to is its
command's (options/completers.py)."""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

SHELLS = ("bash", "zsh", "fish")
PROGRAM = "diskvault"
COMPLETE_VARIABLE = "_DISKVAULT_COMPLETE"


@click.command()
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the completion script for SHELL (setup installs it; or, in ~/.bashrc:
    eval "$(diskvault completion bash)")."""
    from ..main import cli

    script_class = get_completion_class(shell)
    click.echo(script_class(cli, {}, PROGRAM, COMPLETE_VARIABLE).source())
