"""init, config and break-lock: creating a repository, its append-only mark, and clearing a
crashed writer's lock."""

from __future__ import annotations

import click

from ...errors import BadInput
from ...store.backends.location import parse_location
from ...store.format.config import (OBJECT_LOCK_MODES, PLAINTEXT_MODE, REPOKEY_MODE,
                                   ChunkerParams, Compression, ObjectLockSettings)
from ...store.repository import Repository
from ..common import CommandPassphrase, json_option, lock_wait_option, opened, repo_option
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
@click.option("--append-only", is_flag=True,
              help="Mark the repository append-only: prune, delete, compact and unprotect "
                   "are refused until 'diskvault config --append-only off'.")
@click.option("--object-lock-days", "lock_days", type=click.IntRange(min=1, max=36500),
              default=None, metavar="N",
              help="S3 bucket made with Object Lock: put every pack and snapshot record with "
                   "a retention of N days (docs/object-lock.md).")
@click.option("--object-lock-mode", "lock_mode", type=click.Choice(OBJECT_LOCK_MODES),
              default="governance", show_default=True,
              help="governance: lifted only with --bypass-governance by a user allowed to; "
                   "compliance: by nobody until it runs out.")
@json_option
def init(repo: str | None, chunk_size: int | None, compression: str, encryption: str,
         chunker_source: str | None, append_only: bool, lock_days: int | None, lock_mode: str,
         as_json: bool) -> None:
    """Create a new, empty repository (encrypted unless --encryption none)."""
    object_lock = None if lock_days is None else ObjectLockSettings(lock_mode, lock_days)
    chunker = None
    if chunker_source is not None:
        if chunk_size is not None:
            raise BadInput("give --chunk-size or --copy-chunker-params-from, not both")
        chunker = Repository.chunker_params(parse_location(chunker_source))
    with Repository.init(parse_location(repo), chunk_size, compression,
                         ENCRYPTION_CHOICES[encryption],
                         CommandPassphrase(confirm=True), chunker=chunker,
                         append_only=append_only, object_lock=object_lock) as repository:
        config = repository.config
    if as_json:
        print_json(config_json(repository.location, config))
        return
    chunker = config.chunker
    click.echo(f"created repository {repository.location} (format {config.version}, chunks "
               f"{human_bytes(chunker.min_bytes)}/{human_bytes(chunker.avg_bytes)}/"
               f"{human_bytes(chunker.max_bytes)}, {compression}, {encryption_label(config)})")
    for line in _setting_lines(config):
        click.echo(line)
    if config.encrypted:
        click.echo(f"keep a copy of the key elsewhere: 'diskvault key export -r "
                   f"{repository.location} FILE' (without it and the passphrase, nothing restores)",
                   err=True)


def _setting_lines(config) -> list[str]:
    lines = ["append-only: clients refuse to delete (prune, delete, compact, unprotect)"] \
        if config.append_only else []
    if config.object_lock is not None:
        lines.append(f"object lock: {config.object_lock.mode}, packs and snapshot records "
                     f"retained {config.object_lock.days} days")
    return lines


@click.command("config")
@repo_option
@click.option("--append-only", "append_only", type=click.Choice(["on", "off"]), default=None,
              help="Set or clear the append-only mark (needs the right to write the "
                   "repository's config).")
@lock_wait_option
@json_option
def config(repo: str | None, append_only: str | None, lock_wait_s: float,
           as_json: bool) -> None:
    """Show the repository's settings, or set its append-only mark."""
    from ...maintenance.append_only import set_append_only  # on use: loads maintenance

    changed = None
    with opened(repo) as repository:
        if append_only is not None:
            changed = set_append_only(repository.storage, append_only == "on", lock_wait_s)
        settings = repository.storage.config
    if as_json:
        print_json({**config_json(repository.location, settings),
                    **({} if changed is None else {"changed": changed})})
        return
    if changed is not None:
        click.echo(f"append-only {append_only}" + ("" if changed else " (it already was)"))
    else:
        click.echo(f"repository {repository.location} (format {settings.version}, "
                   f"{encryption_label(settings)})")
        for line in _setting_lines(settings) or ["append-only: off"]:
            click.echo(line)


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
