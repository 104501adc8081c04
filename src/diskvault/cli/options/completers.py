"""What SNAPSHOT arguments and --name complete to in the shell: the ids, series names and
``latest`` of the repository named so far on the line. Completion never asks for a
passphrase and never fails loudly: without what it needs it offers nothing."""

from __future__ import annotations

import os

import click
from click.shell_completion import CompletionItem

from ..common import PASSWORD_FILE_KEY, REPO_KEY


def _records(ctx: click.Context):
    """The snapshots of the repository on the line so far, or [] when it cannot be read
    without asking anyone anything."""
    repo = ctx.params.get("repo") or ctx.meta.get(REPO_KEY) or os.environ.get("DISKVAULT_REPO")
    if not repo:
        return []
    from ...store.backends.location import parse_location  # only when completing
    from ...store.keys.passphrase import get_passphrase
    from ...store.repository import Repository

    password_file = ctx.meta.get(PASSWORD_FILE_KEY)
    try:
        with Repository.open(parse_location(repo),
                             lambda: get_passphrase(password_file=password_file)) as repository:
            return repository.list_snapshots()
    except Exception:  # a completion offers nothing rather than an error in the prompt
        return []


def complete_snapshot(ctx: click.Context, _param, incomplete: str) -> list[CompletionItem]:
    """A SNAPSHOT: a short id (with its series and time as help), a series name, latest."""
    records = _records(ctx)
    items = [CompletionItem(r.short_id, help=f"{r.name} {r.time_label}") for r in records]
    items += [CompletionItem(name, help="its latest snapshot")
              for name in sorted({r.name for r in records})]
    items.append(CompletionItem("latest", help="the newest snapshot"))
    return [item for item in items if item.value.startswith(incomplete)]


def complete_series(ctx: click.Context, _param, incomplete: str) -> list[CompletionItem]:
    """--name: the series the repository has."""
    names = sorted({r.name for r in _records(ctx)})
    return [CompletionItem(name) for name in names if name.startswith(incomplete)]
