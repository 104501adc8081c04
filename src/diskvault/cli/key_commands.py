"""key export, key import, key change-passphrase: the key of an encrypted repository."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ..errors import PassphraseUnavailable
from ..store.backends.location import parse_location
from ..store.keys.passphrase import (NEW_PASSWORD_VARIABLE, ask, environment, read_passphrase_file,
                                     terminal_prompt)
from ..store.repository import Repository
from .common import CommandPassphrase, opened, repo_option


@click.group(invoke_without_command=False)
def key() -> None:
    """The key of an encrypted repository: keep an export of it somewhere else."""


@key.command("export")
@repo_option
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, allow_dash=True))
def export(repo: str | None, file: Path) -> None:
    """Write the repository's key file (still locked by the passphrase) to FILE (- for
    stdout). Needs the passphrase, so that a mistyped one is found now, not in a crisis."""
    with opened(repo) as repository:
        text = repository.export_key()
    if str(file) == "-":
        click.echo(text, nl=False)
        return
    fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    click.echo(f"exported the key of {repository.location} to {file}", err=True)


@key.command("import")
@repo_option
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
def import_(repo: str | None, file: Path) -> None:
    """Put back the repository's key file from an export (FILE) of its key: for a lost or
    damaged key file. Needs no passphrase; the export's passphrase is the one to use."""
    location = parse_location(repo)
    Repository.import_key(location, file.read_text(errors="replace"))
    click.echo(f"imported the key of {location} from {file}", err=True)


@key.command("change-passphrase")
@repo_option
@click.option("--new-password-file", type=click.Path(path_type=Path, dir_okay=False),
              default=None, help=f"Read the new passphrase from this file's first line (or "
                                 f"set {NEW_PASSWORD_VARIABLE}; else asked twice).")
def change_passphrase(repo: str | None, new_password_file: Path | None) -> None:
    """Reseal the repository's key under a new passphrase (no data is rewritten; key
    exports made before keep the old passphrase)."""
    old = CommandPassphrase()
    with opened(repo, old) as repository:
        repository.change_passphrase(old, lambda: _new_passphrase(new_password_file))
    click.echo(f"changed the passphrase of {repository.location}", err=True)


def _new_passphrase(password_file: Path | None) -> str:
    if password_file is not None:
        passphrase = read_passphrase_file(password_file)
    elif NEW_PASSWORD_VARIABLE in environment():
        passphrase = environment()[NEW_PASSWORD_VARIABLE]
    else:
        prompt = terminal_prompt()
        if prompt is None:
            raise PassphraseUnavailable(f"no new passphrase: give --new-password-file FILE or "
                                        f"set {NEW_PASSWORD_VARIABLE}, or run at a terminal")
        passphrase = ask(prompt, confirm=True)
    if not passphrase:
        raise PassphraseUnavailable("the new passphrase is empty: nothing was changed")
    return passphrase
