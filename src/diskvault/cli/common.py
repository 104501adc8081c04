"""What every command shares: the repository option, --debug, opening the repository.

`-r/--repo` and `--debug` are accepted before the command name (a group option) and
after it (a command option), as restic and borg users type them. The group option
records its value in the click context's ``meta``, which every nested context shares;
the command option falls back to it. The one closest to the command wins.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager

import click

from ..store.repository import Repository, repository_path

DEBUG_FLAG = "--debug"
REPO_KEY = "diskvault.repo"
DEBUG_KEY = "diskvault.debug"
REPO_HELP = "Repository folder, before or after the command name (or set DISKVAULT_REPO)."


def _remember_group_repo(ctx: click.Context, _param, value: str | None) -> None:
    ctx.meta[REPO_KEY] = value


def _repo_or_group_repo(ctx: click.Context, _param, value: str | None) -> str | None:
    return value if value is not None else ctx.meta.get(REPO_KEY)


group_repo_option = click.option(
    "-r", "--repo", envvar="DISKVAULT_REPO", metavar="REPO", expose_value=False,
    callback=_remember_group_repo, help=REPO_HELP)

repo_option = click.option(
    "-r", "--repo", "repo", metavar="REPO", callback=_repo_or_group_repo, help=REPO_HELP)


def _enable_debug(ctx: click.Context, _param, value: bool) -> None:
    if value:
        ctx.meta[DEBUG_KEY] = True
        logging.getLogger().setLevel(logging.DEBUG)


def debug_option() -> click.Option:
    """A fresh --debug option (click options belong to one command each)."""
    return click.Option([DEBUG_FLAG], is_flag=True, expose_value=False,
                        callback=_enable_debug,
                        help="Show tracebacks of errors (before or after the command name).")


def debug_enabled(ctx: click.Context) -> bool:
    return ctx.meta.get(DEBUG_KEY, False)


json_option = click.option(
    "--json", "as_json", is_flag=True,
    help="Print what the command did as one JSON document on stdout.")

lock_wait_option = click.option(
    "--lock-wait", "lock_wait_s", type=click.FloatRange(min=0), default=0, metavar="SECONDS",
    show_default=True, help="Wait up to this long for another writer to finish.")


@contextmanager
def opened(repo: str | None):
    """The repository named by -r/DISKVAULT_REPO, closed afterwards."""
    repository = Repository.open(repository_path(repo))
    try:
        yield repository
    finally:
        repository.close()
