"""key export, key import, key change-passphrase: the key of an encrypted repository."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ...errors import PassphraseUnavailable
from ...store.backends.location import parse_location
from ...store.keys.passphrase import (NEW_PASSWORD_VARIABLE, ask, environment,
                                      read_passphrase_file, terminal_prompt)
from ...store.repository import Repository
from ..common import CommandPassphrase, json_option, opened, repo_option
from ..output.formatting import print_json


@click.group(invoke_without_command=False)
def key() -> None:
    """The key of an encrypted repository: keep an export of it somewhere else."""


@key.command("export")
@repo_option
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, allow_dash=True))
@json_option
def export(repo: str | None, file: Path, as_json: bool) -> None:
    """Write the repository's key file (still locked by the passphrase) to FILE (- for
    stdout). Needs the passphrase, so that a mistyped one is found now, not in a crisis."""
    to_stdout = str(file) == "-"
    if to_stdout and as_json:
        raise click.UsageError("--json prints a report on stdout, where '-' would put the "
                               "key: give a FILE")
    with opened(repo) as repository:
        text = repository.export_key()
    if to_stdout:
        click.echo(text, nl=False)
        return
    fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    _report(as_json, f"exported the key of {repository.location} to {file}",
            repository=str(repository.location), file=str(file), exported=True)


@key.command("import")
@repo_option
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@json_option
def import_(repo: str | None, file: Path, as_json: bool) -> None:
    """Put back the repository's key file from an export (FILE) of its key: for a lost or
    damaged key file. Needs no passphrase; the export's passphrase is the one to use."""
    location = parse_location(repo)
    Repository.import_key(location, file.read_text(errors="replace"))
    _report(as_json, f"imported the key of {location} from {file}",
            repository=str(location), file=str(file), imported=True)


@key.command("change-passphrase")
@repo_option
@click.option("--new-password-file", type=click.Path(path_type=Path, dir_okay=False),
              default=None, help=f"Read the new passphrase from this file's first line (or "
                                 f"set {NEW_PASSWORD_VARIABLE}; else asked twice).")
@json_option
def change_passphrase(repo: str | None, new_password_file: Path | None, as_json: bool) -> None:
    """Reseal the repository's key under a new passphrase (no data is rewritten; key
    exports made before keep the old passphrase)."""
    old = CommandPassphrase()
    with opened(repo, old) as repository:
        repository.change_passphrase(old, lambda: _new_passphrase(new_password_file))
    _report(as_json, f"changed the passphrase of {repository.location}",
            repository=str(repository.location), passphrase_changed=True)


def _report(as_json: bool, line: str, **fields) -> None:
    """What a key command did: a line on stderr, or with --json a document on stdout."""
    if as_json:
        print_json(fields)
    else:
        click.echo(line, err=True)


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
