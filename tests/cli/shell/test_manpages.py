"""The man pages are made from the command tree: a page for diskvault and one for every
command and subcommand (key export...), each with the options --help shows, and groff renders them
without a warning."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

from diskvault.cli.main import COMMANDS, cli


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> Path:
    """The pages, written by the module setup.sh runs, in a real subprocess."""
    folder = tmp_path_factory.mktemp("man1")
    subprocess.run([sys.executable, "-m", "diskvault.cli.shell.manpages", str(folder)], check=True,
                   timeout=120)
    return folder


def test_every_command_and_subcommand_has_a_page(pages):
    ctx = click.Context(cli)
    expected = {"diskvault.1"}
    for name in COMMANDS:
        expected.add(f"diskvault-{name}.1")
        command = cli.get_command(ctx, name)
        if isinstance(command, click.Group):  # key export, key import ...
            expected |= {f"diskvault-{name}-{sub}.1" for sub in command.list_commands(ctx)}
    assert {"diskvault-key-export.1", "diskvault-key-change-passphrase.1"} <= expected
    assert {page.name for page in pages.iterdir()} == expected


def test_a_page_holds_the_synopsis_and_the_options(pages):
    text = (pages / "diskvault-init.1").read_text()
    assert '.TH "DISKVAULT-INIT" "1"' in text
    assert "\\fB\\-\\-chunk\\-size AVG\\fR" in text and "s3://BUCKET/PREFIX" in text
    assert "diskvault\\-backup" in (pages / "diskvault.1").read_text()


def test_groff_renders_every_page_without_a_warning(pages):
    if shutil.which("groff") is None:
        pytest.skip("groff is not installed (apt-get install groff-base)")
    for page in sorted(pages.iterdir()):
        result = subprocess.run(["groff", "-man", "-Tutf8", "-ww", str(page)],
                                capture_output=True, text=True,
                                env={**os.environ, "LC_ALL": "C.UTF-8"})
        assert result.returncode == 0 and result.stderr == "", (page.name, result.stderr)
        assert "SYNOPSIS" in re.sub(".\b", "", result.stdout)  # without overstrikes
