"""A click group that imports a command's module only when that command runs.

``diskvault --help`` and every command would otherwise import every command module, and
with them the store, the maintenance flows and the FUSE layer (about 300 ms before the
first line of output). The group knows each command by name, module and short help; the
module is imported when the command is looked up to run or to show its own help.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import click


@dataclass(frozen=True)
class LazyCommand:
    """Where a command lives (``module:attribute``, the module relative to this package)
    and the short help ``--help`` lists for it (the first sentence of its docstring)."""

    target: str
    short_help: str

    def load(self) -> click.Command:
        module_name, attribute = self.target.split(":")
        return getattr(importlib.import_module(f"{__package__}.{module_name}"), attribute)


class LazyGroup(click.Group):
    """A group over a table of LazyCommands; ``prepare`` sees each command once, on load."""

    def __init__(self, *args, lazy_commands: dict[str, LazyCommand], **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy_commands = lazy_commands

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self.lazy_commands)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy_commands:
            command = self.lazy_commands[cmd_name].load()
            self.prepare(command)
            self.commands[cmd_name] = command
        return self.commands.get(cmd_name)

    def prepare(self, command: click.Command) -> None:
        """What the group adds to each of its commands (nothing here)."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list of ``--help`` from the table: no command module imported."""
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        # A stand-in command shortens the help exactly as click shortens the real one's.
        rows = [(name, click.Command(name, help=self.lazy_commands[name].short_help)
                 .get_short_help_str(limit)) for name in names]
        with formatter.section("Commands"):
            formatter.write_dl(rows)
