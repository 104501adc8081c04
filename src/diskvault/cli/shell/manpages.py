"""Man pages made from the command line itself: ``diskvault(1)`` with the list of commands,
and ``diskvault-COMMAND(1)`` (``diskvault-key-export(1)`` for a subcommand) with its usage,
help and options, as click describes them, so the pages never drift from --help.

    python -m diskvault.cli.shell.manpages FOLDER     (scripts/setup.sh runs it)
"""

from __future__ import annotations

import inspect
import sys
from importlib.metadata import version
from pathlib import Path

import click

from ..main import cli

PROGRAM = "diskvault"
SECTION = "1"


def roff(text: str) -> str:
    """Plain text as roff: backslashes and hyphens escaped, no line read as a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line
                     for line in text.splitlines())


def _page(path: list[str], command: click.Command, ctx: click.Context) -> str:
    name = "-".join(path)
    usage = " ".join(command.collect_usage_pieces(ctx))
    lines = [f'.TH "{name.upper()}" "{SECTION}" "" "{PROGRAM} {version(PROGRAM)}" '
             f'"{PROGRAM} manual"',
             ".SH NAME", f"{roff(name)} \\- {roff(command.get_short_help_str(limit=200))}",
             ".SH SYNOPSIS", f".B {roff(' '.join(path))}", roff(usage),
             ".SH DESCRIPTION"]
    lines += [roff(paragraph) + "\n.PP"
              for paragraph in inspect.cleandoc(command.help or "").split("\n\n")]
    if isinstance(command, click.Group):
        lines.append(".SH COMMANDS")
        for sub in command.list_commands(ctx):
            lines += [".TP", f"\\fB{roff(sub)}\\fR",
                      roff(_short_help(command, ctx, sub)),
                      f"See \\fB{roff(name)}\\-{roff(sub)}\\fR({SECTION})."]
    options = [param.get_help_record(ctx) for param in command.get_params(ctx)
               if isinstance(param, click.Option)]
    options = [record for record in options if record]
    if options:
        lines.append(".SH OPTIONS")
        for names, help_text in options:
            lines += [".TP", f"\\fB{roff(names)}\\fR", roff(help_text or "")]
    if path != [PROGRAM]:
        lines += [".SH SEE ALSO", f"\\fB{PROGRAM}\\fR({SECTION})"]
    return "\n".join(lines) + "\n"


def _short_help(group: click.Group, ctx: click.Context, name: str) -> str:
    """A command's line in its group's list, without loading it when the table has it."""
    lazy = getattr(group, "lazy_commands", {}).get(name)
    if lazy is not None:
        return lazy.short_help
    return group.get_command(ctx, name).get_short_help_str(limit=200)


def pages(command: click.Command = cli, path: list[str] | None = None,
          parent: click.Context | None = None):
    """(file name, roff text) of the page of ``command`` and of every command under it."""
    path = path or [PROGRAM]
    ctx = click.Context(command, info_name=path[-1], parent=parent)
    yield f"{'-'.join(path)}.{SECTION}", _page(path, command, ctx)
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            yield from pages(command.get_command(ctx, name), path + [name], ctx)


def write_pages(folder: Path) -> list[Path]:
    written = []
    for file_name, text in pages():
        target = folder / file_name
        target.write_text(text)
        written.append(target)
    return written


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m diskvault.cli.shell.manpages FOLDER")
    write_pages(Path(sys.argv[1]))
