"""Starting is cheap: `diskvault --help` imports no command module and nothing of the
store, and still lists every command with the short help of its own docstring."""

from __future__ import annotations

import importlib
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

import diskvault.cli
from diskvault.cli.main import COMMANDS, cli

# What only running a command may load: the store and its native libraries, the FUSE
# layer, the image parsers, the object store's client.
HEAVY_MODULES = ("diskvault.store", "diskvault.image", "diskvault.maintenance",
                 "diskvault.fuse", "lmdb", "zstandard", "blake3", "fastcdc", "cryptography",
                 "boto3", "botocore", "dissect", "fuse")


# `python -m diskvault ARGS` that writes, at exit, the names of all modules it imported.
# (`-X importtime` does not name a module imported through importlib, as commands are.)
RUN_AND_LIST_MODULES = (
    "import atexit, os, runpy, sys\n"
    "atexit.register(lambda: open(os.environ['MODULES_FILE'], 'w')\n"
    "                .write('\\n'.join(sys.modules)))\n"
    "runpy.run_module('diskvault', run_name='__main__')\n")


def imported_modules(tmp_path: Path, *args: str) -> set[str]:
    """The modules a real `diskvault ARGS` imports."""
    listing = tmp_path / "modules"
    subprocess.run([sys.executable, "-c", RUN_AND_LIST_MODULES, *args], capture_output=True,
                   timeout=600, check=True, env={**os.environ, "MODULES_FILE": str(listing)})
    return set(listing.read_text().splitlines())


def heavy(modules: set[str]) -> set[str]:
    return {name for name in modules
            if any(name == root or name.startswith(root + ".") for root in HEAVY_MODULES)}


@pytest.mark.parametrize("args", [["--help"], ["--version"]])
def test_help_and_version_import_nothing_of_the_store_or_the_commands(args, tmp_path):
    modules = imported_modules(tmp_path, *args)
    assert heavy(modules) == set()
    assert {name for name in modules if name.startswith("diskvault.cli.commands.")} == set()


def test_the_help_of_one_command_imports_only_that_command(tmp_path):
    modules = imported_modules(tmp_path, "umount", "--help")
    assert "diskvault.cli.commands.mount" in modules
    assert {"diskvault.cli.commands.snapshots", "diskvault.cli.commands.backup",
            "diskvault.cli.commands.restore", "diskvault.cli.commands.maintenance",
            "diskvault.cli.commands.demo", "diskvault.maintenance"} & modules == set()


def test_help_lists_every_command_with_the_first_sentence_of_its_docstring():
    context = click.Context(cli)
    for name, entry in COMMANDS.items():
        command = cli.get_command(context, name)
        assert command.name == name
        assert command.get_short_help_str(limit=10_000) == entry.short_help, name


def test_every_command_defined_in_the_cli_package_is_in_the_table():
    registered = {entry.target for entry in COMMANDS.values()}
    defined = set()
    prefix = "diskvault.cli."
    for module_info in pkgutil.walk_packages(diskvault.cli.__path__, prefix):
        module = importlib.import_module(module_info.name)
        name = module_info.name.removeprefix(prefix)
        defined |= {f"{name}:{attribute}" for attribute, value in vars(module).items()
                    if isinstance(value, click.Command)
                    and value.callback.__module__ == module.__name__
                    and value is not cli and not _is_subcommand(value)}
    assert defined == registered


def _is_subcommand(command: click.Command) -> bool:
    """`key export`, `schedule cron` and their siblings belong to their group, not to the
    table."""
    context = click.Context(cli)
    groups = [cli.get_command(context, name) for name in COMMANDS]
    return any(command in group.commands.values() for group in groups
               if isinstance(group, click.Group))


@pytest.mark.parametrize("command", ["list", "info"])
def test_reading_the_snapshot_list_loads_neither_backup_nor_image_parsers_nor_maintenance(
        repo, make_image, tmp_path, command):
    repo.backup(make_image(1 << 16, "random", name="vm1.img"), name="vm1")
    modules = imported_modules(tmp_path, command, "-r", str(repo.root))
    assert "diskvault.store.repository" in modules
    assert {name for name in modules if name.startswith(("diskvault.image.drivers",
                                                         "diskvault.maintenance",
                                                         "diskvault.fuse", "dissect"))
            or name in ("diskvault.store.backup.back_up", "diskvault.store.read.browse")} == set()


# What listing a plaintext repository's snapshots never needs: chunking, compression,
# encryption and key derivation, the object store's client, and the flows that write or
# read images.
NOT_FOR_LISTING = ("fastcdc", "zstandard", "cryptography", "argon2", "boto3", "botocore",
                   "dissect",
                   "diskvault.store.backup.chunker", "diskvault.store.copy",
                   "diskvault.store.read.reader", "diskvault.store.restore.restore",
                   "diskvault.store.read.read_plan", "diskvault.store.backup.write_session",
                   "diskvault.store.keys.key_file")


@pytest.mark.parametrize("args", [["list"], ["info"], ["info", "latest"]])
def test_listing_a_plaintext_repository_loads_no_chunker_codec_cipher_or_image_flow(
        repo, make_image, tmp_path, args):
    repo.backup(make_image(1 << 16, "random", name="vm1.img"), name="vm1")
    modules = imported_modules(tmp_path, *args, "-r", str(repo.root))
    assert "diskvault.store.format.snapshots" in modules
    assert {name for name in modules
            if any(name == root or name.startswith(root + ".") for root in NOT_FOR_LISTING)
            } == set()


def test_the_mount_operations_load_no_filesystem_parser_before_files_inside_are_browsed():
    """The mount's process imports its operations before the mount goes up; the parsers of
    `<image>.files/` load with the first path there."""
    script = ("import sys, diskvault.fuse.operations\n"
              "print('\\n'.join(sys.modules))")
    modules = set(subprocess.run([sys.executable, "-c", script], capture_output=True,
                                 text=True, timeout=600, check=True).stdout.split())
    assert "diskvault.fuse.operations" in modules
    assert {name for name in modules if name.startswith(("diskvault.image.filesystems",
                                                         "diskvault.image.drivers",
                                                         "diskvault.image.locations",
                                                         "diskvault.store.read.browse",
                                                         "diskvault.fuse.files", "dissect"))
            } == set()
