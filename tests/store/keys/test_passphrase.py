"""Where the passphrase comes from: order, file, command, variable, prompt, and no terminal."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from diskvault.errors import EXIT_BAD_INPUT, PassphraseUnavailable
from diskvault.store.keys.passphrase import (COMMAND_OUTPUT_MAX_BYTES, NEW_PASSWORD_VARIABLE,
                                             PASSWORD_COMMAND_VARIABLE, PASSWORD_FILE_VARIABLE,
                                             PASSWORD_VARIABLE, SOURCE_NAMES, PassphraseSource,
                                             choose_source, environ_without_secrets, get_passphrase,
                                             run_passphrase_command)


def answers(*replies: str):
    """A prompt that answers from a list and records what it was asked."""
    asked: list[str] = []

    def prompt(question: str) -> str:
        asked.append(question)
        return replies[len(asked) - 1]
    prompt.asked = asked
    return prompt


def python_command(code: str) -> str:
    return f"{sys.executable} -c {code!r}"


@pytest.fixture
def pass_file(tmp_path: Path) -> Path:
    path = tmp_path / "pass"
    path.write_text("from file\nsecond line ignored\n")
    return path


def test_sources_are_chosen_in_order(pass_file):
    everything = {PASSWORD_VARIABLE: "x", PASSWORD_FILE_VARIABLE: "/f",
                  PASSWORD_COMMAND_VARIABLE: "cmd"}
    assert choose_source(everything, Path("/explicit")) == PassphraseSource("file", "/explicit")
    assert choose_source(everything) == PassphraseSource("environment", PASSWORD_VARIABLE)
    del everything[PASSWORD_VARIABLE]
    assert choose_source(everything) == PassphraseSource("file", "/f")
    del everything[PASSWORD_FILE_VARIABLE]
    assert choose_source(everything) == PassphraseSource("command", "cmd")
    assert choose_source({}, interactive=True) == PassphraseSource("prompt")


def test_an_empty_variable_counts_as_unset():
    assert choose_source({PASSWORD_VARIABLE: "", PASSWORD_COMMAND_VARIABLE: "cmd"}).kind \
        == "command"


def test_the_variable_gives_the_passphrase_as_is():
    assert get_passphrase({PASSWORD_VARIABLE: " spaced secret "}) == " spaced secret "


def test_a_file_gives_its_first_line(pass_file):
    assert get_passphrase({PASSWORD_FILE_VARIABLE: str(pass_file)}) == "from file"
    assert get_passphrase({PASSWORD_VARIABLE: "env"}, password_file=pass_file) == "from file"


def test_a_missing_file_is_named(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(PassphraseUnavailable, match=str(missing)):
        get_passphrase({PASSWORD_FILE_VARIABLE: str(missing)})


def test_a_command_gives_the_first_line_of_its_output():
    command = python_command("print('from command'); print('more')")
    assert get_passphrase({PASSWORD_COMMAND_VARIABLE: command}) == "from command"


def test_a_command_runs_without_a_shell(tmp_path):
    marker = tmp_path / "marker"
    command = f"{sys.executable} -c \"print('x')\" ; touch {marker}"
    # no shell: ";", "touch" and the path are only more arguments to python's -c script
    assert get_passphrase({PASSWORD_COMMAND_VARIABLE: command}) == "x"
    assert not marker.exists()


def test_a_command_does_not_see_the_passphrase_variable():
    command = python_command("import os; print(os.environ.get('DISKVAULT_PASSWORD', 'unset'))")
    environ = {PASSWORD_COMMAND_VARIABLE: command, PASSWORD_VARIABLE: ""}
    assert get_passphrase(environ) == "unset"
    assert environ_without_secrets({PASSWORD_VARIABLE: "s", "HOME": "/h"}) == {"HOME": "/h"}


def test_a_failing_command_is_named_without_its_arguments():
    command = python_command("import sys; print('leaked'); sys.exit(3)")
    with pytest.raises(PassphraseUnavailable) as caught:
        get_passphrase({PASSWORD_COMMAND_VARIABLE: command})
    message = str(caught.value)
    assert "exit code 3" in message and sys.executable in message
    assert "leaked" not in message and "sys.exit" not in message


def test_a_command_that_does_not_exist_is_named():
    with pytest.raises(PassphraseUnavailable, match="no-such-program-xyz"):
        get_passphrase({PASSWORD_COMMAND_VARIABLE: "no-such-program-xyz --flag"})


def test_an_empty_passphrase_is_refused_naming_its_source(tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(PassphraseUnavailable, match="empty"):
        get_passphrase({PASSWORD_FILE_VARIABLE: str(empty)})


def test_the_prompt_asks_once_to_unlock_and_twice_to_create():
    once = answers("typed")
    assert get_passphrase({}, prompt=once) == "typed" and len(once.asked) == 1
    twice = answers("new", "new")
    assert get_passphrase({}, prompt=twice, confirm=True) == "new" and len(twice.asked) == 2


def test_two_different_answers_at_creation_are_refused():
    with pytest.raises(PassphraseUnavailable, match="differ"):
        get_passphrase({}, prompt=answers("one", "two"), confirm=True)


def test_a_set_source_wins_over_the_prompt():
    prompt = answers()
    assert get_passphrase({PASSWORD_VARIABLE: "env"}, prompt=prompt) == "env"
    assert prompt.asked == []


def test_no_source_and_no_terminal_is_one_line_naming_the_variables():
    with pytest.raises(PassphraseUnavailable) as caught:
        get_passphrase({}, prompt=None)
    message = str(caught.value)
    assert caught.value.exit_code == EXIT_BAD_INPUT and "\n" not in message
    for variable in (PASSWORD_VARIABLE, PASSWORD_FILE_VARIABLE, PASSWORD_COMMAND_VARIABLE):
        assert variable in message


def test_source_names_look_only_at_the_source_variables_and_are_kept_from_children():
    environ = {PASSWORD_VARIABLE: "destination", "DISKVAULT_FROM_PASSWORD": "source"}
    assert get_passphrase(environ, names=SOURCE_NAMES) == "source"
    with pytest.raises(PassphraseUnavailable, match="DISKVAULT_FROM_PASSWORD_FILE"):
        get_passphrase({PASSWORD_VARIABLE: "destination"}, names=SOURCE_NAMES)
    assert environ_without_secrets(environ) == {}


def test_a_command_does_not_see_the_new_passphrase_of_key_change_passphrase():
    command = python_command(f"import os; print(os.environ.get({NEW_PASSWORD_VARIABLE!r}, "
                             f"'unset'))")
    assert get_passphrase({PASSWORD_COMMAND_VARIABLE: command,
                           NEW_PASSWORD_VARIABLE: "the new one"}) == "unset"


@pytest.mark.skipif(shutil.which("yes") is None, reason="yes is not installed (coreutils)")
def test_a_command_printing_without_end_is_stopped_after_a_few_kib():
    """`yes x` never stops printing: the read is bounded and the command killed."""
    with pytest.raises(PassphraseUnavailable) as caught:
        get_passphrase({PASSWORD_COMMAND_VARIABLE: "yes x"})
    assert str(caught.value) == (f"the passphrase command yes printed more than "
                                 f"{COMMAND_OUTPUT_MAX_BYTES} bytes (a passphrase is one line) "
                                 f"and was stopped; check {PASSWORD_COMMAND_VARIABLE}")


def test_a_command_that_never_exits_is_killed_at_the_timeout(tmp_path):
    pid_file = tmp_path / "pid"
    command = f"sh -c 'echo $$ > {pid_file}; exec sleep 1000'"
    with pytest.raises(PassphraseUnavailable) as caught:
        run_passphrase_command(command, {}, timeout_s=0.5)
    assert str(caught.value) == (f"the passphrase command sh did not finish within 0.5 s and "
                                 f"was stopped; check {PASSWORD_COMMAND_VARIABLE}")
    assert not Path(f"/proc/{pid_file.read_text().strip()}").exists(), "sleep still runs"


def test_a_command_that_closes_its_output_but_runs_on_is_killed_at_the_timeout():
    command = python_command("import os, time; print('x', flush=True); os.close(1); "
                             "time.sleep(1000)")
    with pytest.raises(PassphraseUnavailable, match="did not finish within 0.5 s"):
        run_passphrase_command(command, {}, timeout_s=0.5)
