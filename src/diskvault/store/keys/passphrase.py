"""Where the passphrase comes from, so that cron runs need no prompt and nothing shows it.

Order, first that is set wins:

1. an explicit file (``--password-file``): the command line beats the environment, so a
   user who names a file gets that file even with a variable exported in the shell;
2. ``DISKVAULT_PASSWORD``: the passphrase itself (visible to the same user and root in
   ``/proc/PID/environ``: prefer a file or a command);
3. ``DISKVAULT_PASSWORD_FILE``: a file whose first line is the passphrase;
4. ``DISKVAULT_PASSWORD_COMMAND``: a command, split with ``shlex`` and run without a shell,
   whose standard output's first line is the passphrase (``pass show backup/vm1``);
5. a terminal prompt, asked twice when a key is created; with no terminal, a one-line
   error that names the variables to set.

Choosing the source is a pure function of the environment; reading it is separate, so
both test without a terminal. Errors name the source, never the passphrase.

A command that opens two repositories (``copy``) reads the second one's passphrase from
the same kinds of sources under other names (``SOURCE_NAMES``: ``--from-password-file``,
``DISKVAULT_FROM_PASSWORD*``).

The CLI moves the passphrase variables out of the process's environment at start
(``take_secret_variables``): no child, and no reader of /proc/PID/environ, sees them; this
module still finds them (``environment``). A passphrase command is bounded: at most
``COMMAND_OUTPUT_MAX_BYTES`` read, ``COMMAND_TIMEOUT_S`` to finish, else it is killed.
"""

from __future__ import annotations

import getpass
import os
import selectors
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ...errors import PassphraseUnavailable
from ...hardening import erase_environment_values

PASSWORD_VARIABLE = "DISKVAULT_PASSWORD"
PASSWORD_FILE_VARIABLE = "DISKVAULT_PASSWORD_FILE"
PASSWORD_COMMAND_VARIABLE = "DISKVAULT_PASSWORD_COMMAND"
SOURCE_PASSWORD_VARIABLE = "DISKVAULT_FROM_PASSWORD"
NEW_PASSWORD_VARIABLE = "DISKVAULT_NEW_PASSWORD"  # key change-passphrase
SECRET_VARIABLES = (PASSWORD_VARIABLE, SOURCE_PASSWORD_VARIABLE, NEW_PASSWORD_VARIABLE)
# A passphrase is one short line: a command printing more is wrong (``yes``), and one
# that takes longer hangs (a PIN prompt nobody answers) -- both are killed.
COMMAND_OUTPUT_MAX_BYTES = 4096
COMMAND_TIMEOUT_S = 120.0

_taken_secrets: dict[str, str] = {}  # the secret variables moved out of os.environ

Prompt = Callable[[str], str]


@dataclass(frozen=True)
class PassphraseNames:
    """The variables and option a passphrase is looked for under, and its prompt."""

    variable: str = PASSWORD_VARIABLE
    file_variable: str = PASSWORD_FILE_VARIABLE
    command_variable: str = PASSWORD_COMMAND_VARIABLE
    file_option: str = "--password-file"
    prompt: str = "Repository passphrase: "
    repository: str = "this repository"  # for messages


REPOSITORY_NAMES = PassphraseNames()
SOURCE_NAMES = PassphraseNames(  # the repository ``copy`` reads from
    SOURCE_PASSWORD_VARIABLE, "DISKVAULT_FROM_PASSWORD_FILE", "DISKVAULT_FROM_PASSWORD_COMMAND",
    "--from-password-file", "Source repository passphrase: ", "the source repository")


@dataclass(frozen=True)
class PassphraseSource:
    """Where a passphrase will be read from: ``kind`` is environment, file, command or
    prompt; ``detail`` names the variable, path or program (never the secret itself)."""

    kind: str
    detail: str = ""

    def describe(self) -> str:
        """For messages: a command is named by its program only (its arguments might hold
        something private)."""
        if self.kind == "command":
            return f"the command {program_name(self.detail)}"
        return {"environment": f"the variable {self.detail}", "file": f"the file {self.detail}",
                "prompt": "the terminal prompt"}[self.kind]


def program_name(command: str) -> str:
    try:
        arguments = shlex.split(command)
    except ValueError:
        return "(unparsable)"
    return arguments[0] if arguments else "(empty)"


def choose_source(environ: Mapping[str, str], password_file: Path | None = None,
                  interactive: bool = False,
                  names: PassphraseNames = REPOSITORY_NAMES) -> PassphraseSource:
    """The first source that is set, in the order of this module's docstring;
    PassphraseUnavailable if none is and there is no terminal to ask."""
    if password_file is not None:
        return PassphraseSource("file", str(password_file))
    if environ.get(names.variable):
        return PassphraseSource("environment", names.variable)
    if environ.get(names.file_variable):
        return PassphraseSource("file", environ[names.file_variable])
    if environ.get(names.command_variable):
        return PassphraseSource("command", environ[names.command_variable])
    if interactive:
        return PassphraseSource("prompt")
    raise PassphraseUnavailable(
        f"{names.repository} is encrypted and no passphrase was given: set "
        f"{names.file_variable}, {names.command_variable} or {names.variable}, or "
        f"pass {names.file_option}, or run it on a terminal")


def first_line(text: str) -> str:
    """A passphrase is one line: the first, without its line ending."""
    return text.splitlines()[0] if text else ""


def read_passphrase_file(path: Path, names: PassphraseNames = REPOSITORY_NAMES) -> str:
    try:
        return first_line(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or "it is not UTF-8 text"
        raise PassphraseUnavailable(f"cannot read the passphrase file {path}: {reason}; "
                                    f"check the path in {names.file_variable} or "
                                    f"{names.file_option}") from None


def take_secret_variables() -> None:
    """Move the passphrase variables out of this process's environment (os.environ and
    the block /proc/PID/environ shows) into this module, which ``environment`` still
    reads: children and other readers of the environment never see them."""
    for name in SECRET_VARIABLES:
        if name in os.environ:
            _taken_secrets[name] = os.environ[name]
    erase_environment_values(SECRET_VARIABLES)


def environment() -> dict[str, str]:
    """The environment as the process started with it, passphrase variables included."""
    return {**os.environ, **_taken_secrets}


def environ_without_secrets(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` minus the passphrase, for any process diskvault starts."""
    return {name: value for name, value in environ.items() if name not in SECRET_VARIABLES}


def run_passphrase_command(command: str, environ: Mapping[str, str],
                           names: PassphraseNames = REPOSITORY_NAMES,
                           timeout_s: float = COMMAND_TIMEOUT_S) -> str:
    """The first line of the command's standard output; its standard error and standard
    input stay the user's (so it may ask for a PIN). Run without a shell, without the
    passphrase variables, killed once it prints more than a passphrase or overruns
    ``timeout_s``."""
    program = program_name(command)
    fix = f"check {names.command_variable}"
    try:
        arguments = shlex.split(command)
    except ValueError:
        arguments = []
    if not arguments:
        raise PassphraseUnavailable(f"{names.command_variable} is empty or has an "
                                    f"unclosed quote: {fix}")
    try:
        child = subprocess.Popen(arguments, stdout=subprocess.PIPE,
                                 env=environ_without_secrets(environ))
    except OSError as error:
        raise PassphraseUnavailable(f"cannot run the passphrase command {program}: "
                                    f"{error.strerror}; {fix}") from None
    with child:
        try:
            output, returncode = _bounded_run(child, timeout_s)
        except PassphraseUnavailable as error:
            child.kill()
            raise PassphraseUnavailable(f"the passphrase command {program} {error}; "
                                        f"{fix}") from None
    if returncode != 0:
        raise PassphraseUnavailable(f"the passphrase command {program} failed with exit "
                                    f"code {returncode}; {fix}")
    try:
        return first_line(output.decode("utf-8"))
    except UnicodeDecodeError:
        raise PassphraseUnavailable(f"the passphrase command {program} printed something "
                                    f"that is not UTF-8 text; {fix}") from None


def _bounded_run(child: subprocess.Popen, timeout_s: float) -> tuple[bytes, int]:
    """``child``'s whole standard output and exit code; PassphraseUnavailable (saying
    what the command did) past COMMAND_OUTPUT_MAX_BYTES or ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    late = PassphraseUnavailable(f"did not finish within {timeout_s:g} s and was stopped")
    output = bytearray()
    with selectors.DefaultSelector() as selector:
        selector.register(child.stdout, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                raise late
            data = os.read(child.stdout.fileno(), COMMAND_OUTPUT_MAX_BYTES + 1)
            if not data:
                break
            output += data
            if len(output) > COMMAND_OUTPUT_MAX_BYTES:
                raise PassphraseUnavailable(f"printed more than {COMMAND_OUTPUT_MAX_BYTES} "
                                            f"bytes (a passphrase is one line) and was "
                                            f"stopped")
    try:  # its output closed; it may still run
        return bytes(output), child.wait(max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise late from None


def ask(prompt: Prompt, confirm: bool, text: str = REPOSITORY_NAMES.prompt) -> str:
    passphrase = prompt(text)
    if confirm and prompt("Repeat the passphrase: ") != passphrase:
        raise PassphraseUnavailable("the two passphrases differ: nothing was changed; "
                                    "run the command again")
    return passphrase


def terminal_prompt() -> Prompt | None:
    """getpass when a person is at a terminal, else None (cron, pipes, CI)."""
    return getpass.getpass if sys.stdin.isatty() else None


def get_passphrase(environ: Mapping[str, str] | None = None, password_file: Path | None = None,
                   *, confirm: bool = False, prompt: Prompt | None = None,
                   names: PassphraseNames = REPOSITORY_NAMES) -> str:
    """The passphrase from the first source set. ``confirm`` asks twice at a prompt (for
    a new key or a new passphrase). ``prompt`` is how to ask a person; None: nobody can
    be asked. ``names``: where to look (``SOURCE_NAMES`` for copy's source). An empty
    passphrase is refused, naming where it came from."""
    environ = environment() if environ is None else environ
    source = choose_source(environ, password_file, interactive=prompt is not None,
                           names=names)
    if source.kind == "environment":
        passphrase = environ[names.variable]
    elif source.kind == "file":
        passphrase = read_passphrase_file(Path(source.detail), names)
    elif source.kind == "command":
        passphrase = run_passphrase_command(source.detail, environ, names)
    else:
        passphrase = ask(prompt, confirm, names.prompt)
    if not passphrase:
        raise PassphraseUnavailable(f"the passphrase from {source.describe()} is empty: "
                                    f"set a passphrase there")
    return passphrase
