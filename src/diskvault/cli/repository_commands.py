"""init and break-lock: creating a repository and clearing a crashed writer's lock."""

from __future__ import annotations

import click

from ..store.config import ChunkerParams, Compression
from ..store.errors import BadInput
from ..store.repository import Repository, repository_path
from .common import opened, repo_option
from .output import human_bytes, warn


def _checked(check):
    """A click callback running ``check(value)``; its BadInput names the option."""
    def callback(_ctx, param: click.Parameter, value):
        if value is not None:
            try:
                check(value)
            except BadInput as error:
                raise BadInput(f"{param.opts[0]} {value}: {error}") from None
        return value
    return callback


@click.command()
@repo_option
@click.option("--chunk-size", "chunk_size", type=int, default=None, metavar="AVG",
              callback=_checked(lambda avg: ChunkerParams.from_average(avg).validate()),
              help="Average chunk size in bytes, a power of two from 256 to 67108864 "
                   "(default 65536).")
@click.option("--compression", default="zstd:3", show_default=True, metavar="zstd:N|none",
              callback=_checked(Compression.parse),
              help="Compression of stored chunks (N from 1 to 22).")
def init(repo: str | None, chunk_size: int | None, compression: str) -> None:
    """Create a new, empty repository."""
    repository = Repository.init(repository_path(repo), chunk_size, compression)
    chunker = repository.config.chunker
    click.echo(f"created repository {repository.root} (format 1, chunks "
               f"{human_bytes(chunker.min_bytes)}/{human_bytes(chunker.avg_bytes)}/"
               f"{human_bytes(chunker.max_bytes)}, {compression})")
    repository.close()


@click.command("break-lock")
@repo_option
def break_lock(repo: str | None) -> None:
    """Remove the writer lock left by a writer that crashed (use with care)."""
    with opened(repo) as repository:
        holder = repository.break_lock()
    if holder is None:
        click.echo("the repository was not locked")
    else:
        warn(f"removed the lock of {holder.command} (pid {holder.pid} on {holder.host}, "
             f"since {holder.since:%Y-%m-%d %H:%M:%S} UTC); if that process is still running, "
             f"the repository may now be damaged: run 'diskvault check'")


def register(group: click.Group) -> None:
    group.add_command(init)
    group.add_command(break_lock)
