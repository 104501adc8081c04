"""What every command shares: the repository option, --debug, opening the repository.

`-r/--repo` and `--debug` are accepted before the command name (a group option) and
after it (a command option), as restic and borg users type them. The group option
records its value in the click context's ``meta``, which every nested context shares;
the command option falls back to it. The one closest to the command wins.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

import click

DEBUG_FLAG = "--debug"
REPO_KEY = "diskvault.repo"
PASSWORD_FILE_KEY = "diskvault.password_file"
DEBUG_KEY = "diskvault.debug"
REPOSITORY_ID_KEY = "diskvault.repository_id"  # for cli/output/run_records.py, once opened
REPO_HELP = ("The repository: a folder, s3://BUCKET/PREFIX or ssh://[USER@]HOST[:PORT]/PATH, "
             "before or after the command name (or set DISKVAULT_REPO).")


def _remember_group_repo(ctx: click.Context, _param, value: str | None) -> None:
    ctx.meta[REPO_KEY] = value


def _repo_or_group_repo(ctx: click.Context, _param, value: str | None) -> str | None:
    return value if value is not None else ctx.meta.get(REPO_KEY)


group_repo_option = click.option(
    "-r", "--repo", envvar="DISKVAULT_REPO", metavar="REPO", expose_value=False,
    callback=_remember_group_repo, help=REPO_HELP)

_repo_only_option = click.option(
    "-r", "--repo", "repo", metavar="REPO", callback=_repo_or_group_repo, help=REPO_HELP)


def _remember_password_file(ctx: click.Context, _param, value: Path | None) -> None:
    if value is not None:  # a command's own option beats the group's
        ctx.meta[PASSWORD_FILE_KEY] = value


def password_file_option() -> click.Option:
    return click.option(
        "--password-file", type=click.Path(path_type=Path, dir_okay=False), default=None,
        expose_value=False, callback=_remember_password_file,
        help="Read the passphrase of an encrypted repository from this file's first line "
             "(or set DISKVAULT_PASSWORD_FILE, DISKVAULT_PASSWORD_COMMAND or "
             "DISKVAULT_PASSWORD).")


group_password_file_option = password_file_option()


def repo_option(command):
    """-r/--repo and --password-file, after the command name."""
    return _repo_only_option(password_file_option()(command))


class CommandPassphrase:
    """The passphrase of this command, fetched on first use and only then (a plaintext
    repository never asks), then kept for the command's life: asked once per command.
    ``names`` (a ``store.passphrase.PassphraseNames``; None: the repository's own) and
    ``password_file_key`` say where to look (copy's source has its own)."""

    def __init__(self, confirm: bool = False, names=None,
                 password_file_key: str = PASSWORD_FILE_KEY):
        self._confirm = confirm
        self._names = names
        self._password_file_key = password_file_key
        self._text: str | None = None

    def __call__(self) -> str:
        if self._text is None:
            from ..store.keys.passphrase import (REPOSITORY_NAMES, environment,  # see opened()
                                                 get_passphrase, terminal_prompt)

            ctx = click.get_current_context(silent=True)
            password_file = ctx.meta.get(self._password_file_key) if ctx else None
            self._text = get_passphrase(environment(), password_file, confirm=self._confirm,
                                        prompt=terminal_prompt(),
                                        names=self._names or REPOSITORY_NAMES)
        return self._text


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

progress_option = click.option(
    "--progress/--no-progress", "show_progress", default=None,
    help="Show a progress line (default: only on a terminal).")

lock_wait_option = click.option(
    "--lock-wait", "lock_wait_s", type=click.FloatRange(min=0), default=0, metavar="SECONDS",
    show_default=True, help="Wait up to this long for another writer to finish.")


@contextmanager
def opened(repo: str | None, passphrase: CommandPassphrase | None = None,
           keys=None, writer: bool = False, reader: bool = False):
    """The repository named by -r/DISKVAULT_REPO, closed afterwards; ``keys`` already
    unlocked (``store.crypto.Keys``: the background mount's) stand in for the passphrase.
    A ``writer`` (backup) takes the writer lock before it uses the index; a ``reader``
    uses it only under reader_lock() (restore, cat) or not at all (list), so an object
    store's cache is caught up there, once (Repository.open)."""
    # Imported here, not at the top: the group imports this module, and `diskvault --help`
    # must not pay for loading the store.
    from ..store.backends.location import parse_location
    from ..store.repository import Repository

    repository = Repository.open(parse_location(repo), passphrase or CommandPassphrase(),
                                 keys=keys, writer=writer, reader=reader)
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.meta[REPOSITORY_ID_KEY] = repository.config.repository_id
    try:
        if writer:
            _refuse_plaintext_given_a_password_file(repository)
        yield repository
    finally:
        repository.close()


def _refuse_plaintext_given_a_password_file(repository) -> None:
    """A writer never writes plaintext into a repository the command line gave a passphrase
    for: its config may have been turned to none by hand (docs/encryption.md)."""
    ctx = click.get_current_context(silent=True)
    password_file = ctx.meta.get(PASSWORD_FILE_KEY) if ctx else None
    if password_file is not None and not repository.config.encrypted:
        from ..errors import DiskvaultError

        raise DiskvaultError(f"repository {repository.location} is not encrypted, but "
                             f"--password-file {password_file} was given for it: if it was "
                             f"encrypted, its config was turned to none by hand (put back "
                             f"the original config and key file); else drop --password-file")

