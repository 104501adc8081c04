"""What every command shares: the repository option, opening the repository."""

from __future__ import annotations

from contextlib import contextmanager

import click

from ..store.repository import Repository, repository_path

repo_option = click.option(
    "-r", "--repo", "repo", envvar="DISKVAULT_REPO", metavar="REPO",
    help="Repository folder (or set DISKVAULT_REPO).")

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
