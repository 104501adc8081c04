"""init and break-lock: creating a repository and clearing a crashed writer's lock."""

from __future__ import annotations

import click

from ...errors import BadInput
from ...store.backends.location import parse_location
from ...store.format.config import PLAINTEXT_MODE, REPOKEY_MODE, ChunkerParams, Compression
from ...store.repository import Repository
from ..common import CommandPassphrase, json_option, opened, repo_option
from ..output.formatting import config_json, encryption_label, human_bytes, print_json, warn
from ..options.sizes import BYTE_SIZE

ENCRYPTION_CHOICES = {"repokey": REPOKEY_MODE, "none": PLAINTEXT_MODE}


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
@click.option("--chunk-size", "chunk_size", type=BYTE_SIZE, default=None, metavar="AVG",
              callback=_checked(lambda avg: ChunkerParams.from_average(avg).validate()),
              help="Average chunk size, a power of two from 256 to 64M, in bytes or with a "
                   "unit: 64K, 1M (default 64K).")
@click.option("--compression", default="zstd:3", show_default=True, metavar="zstd:N|none",
              callback=_checked(Compression.parse),
              help="Compression of stored chunks (N from 1 to 22).")
@click.option("--encryption", type=click.Choice(sorted(ENCRYPTION_CHOICES)), default="repokey",
              show_default=True,
              help="repokey: AES-256-GCM, the key kept in the repository under a passphrase "
                   "(asked twice at a terminal, or DISKVAULT_PASSWORD*); none: plaintext.")
@click.option("--copy-chunker-params-from", "chunker_source", default=None, metavar="REPO",
              help="Cut chunks as the repository REPO does (its chunker parameters), so "
                   "that 'diskvault copy' between the two deduplicates.")
@json_option
def init(repo: str | None, chunk_size: int | None, compression: str, encryption: str,
         chunker_source: str | None, as_json: bool) -> None:
    """Create a new, empty repository (encrypted unless --encryption none)."""
    chunker = None
    if chunker_source is not None:
        if chunk_size is not None:
            raise BadInput("give --chunk-size or --copy-chunker-params-from, not both")
        chunker = Repository.chunker_params(parse_location(chunker_source))
    with Repository.init(parse_location(repo), chunk_size, compression,
                         ENCRYPTION_CHOICES[encryption],
                         CommandPassphrase(confirm=True), chunker=chunker) as repository:
        config = repository.config
    if as_json:
        print_json(config_json(repository.location, config))
        return
    chunker = config.chunker
    click.echo(f"created repository {repository.location} (format {config.version}, chunks "
               f"{human_bytes(chunker.min_bytes)}/{human_bytes(chunker.avg_bytes)}/"
               f"{human_bytes(chunker.max_bytes)}, {compression}, {encryption_label(config)})")
    if config.encrypted:
        click.echo(f"keep a copy of the key elsewhere: 'diskvault key export -r "
                   f"{repository.location} FILE' (without it and the passphrase, nothing restores)",
                   err=True)


@click.command("break-lock")
@repo_option
@json_option
def break_lock(repo: str | None, as_json: bool) -> None:
    """Remove the writer lock left by a writer that crashed (use with care)."""
    with opened(repo) as repository:
        holder = repository.break_lock()
    if as_json:
        print_json({"removed_lock": None if holder is None else {
            "command": holder.command, "pid": holder.pid, "host": holder.host,
            "since": holder.since.isoformat()}})
    elif holder is None:
        click.echo("the repository was not locked")
    if holder is not None:  # on stderr with --json too: the repository may now be damaged
        warn(f"removed the lock of {holder.command} (pid {holder.pid} on {holder.host}, "
             f"since {holder.since:%Y-%m-%d %H:%M:%S} UTC); if that process is still running, "
             f"the repository may now be damaged: run 'diskvault check'")
