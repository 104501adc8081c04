"""An append-only server (``serve-repository --append-only`` forced by a ``command=`` line in
authorized_keys, through a real sshd) lets its client back up and read, and refuses every
delete, overwrite and move of packs, records, config and keys, whatever the client runs:
prune and delete fail with one line and exit 77, a hand-made client gets the same refusals,
and no byte on the server changes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from diskvault.errors import EXIT_NO_PERMISSION, AppendOnlyRefused
from diskvault.store.backends.ssh import open_ssh_backend

from ..cli.test_errors import assert_one_line_error
from ..conftest import run_cli, write_image

CHANGEABLE = ("readers/", "readers-paused/")


@pytest.fixture(scope="module")
def append_only(ssh_server, ssh_full_key, tmp_path_factory):
    """A repository with two snapshots made through an append-only key; the environment
    that uses that key."""
    folder = tmp_path_factory.mktemp("append-only")
    full = {"DISKVAULT_RSH": ssh_server.rsh(ssh_full_key), "XDG_CACHE_HOME": str(folder / "c"),
            "DISKVAULT_REMOTE_PATH": ssh_server.remote_path}
    url = ssh_server.url("guarded")
    run_cli("init", "-r", url, "--encryption", "none", env=full, check=True)
    key = ssh_server.add_key("append-only", ssh_server.serve_command(
        "--append-only", str(ssh_server.home / "guarded")))
    limited = {**full, "DISKVAULT_RSH": ssh_server.rsh(key)}
    # The URL's path is the client's wish; the forced command's path is the repository.
    limited_url = ssh_server.url("anything-else")
    for seed in (1, 2):
        image = write_image(folder / "vm.img", 2 << 20, "mixed", seed=seed)
        run_cli("backup", "-r", limited_url, str(image), "--name", "vm", env=limited,
                check=True)
    return limited_url, limited, ssh_server.home / "guarded", image


def contents(folder: Path) -> dict[str, str]:
    """Every file of the repository but those a client may change, by its sha256."""
    found = {}
    for path in sorted(folder.rglob("*")):
        name = str(path.relative_to(folder))
        if path.is_file() and not name.startswith(CHANGEABLE):
            found[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def test_an_append_only_client_backs_up_lists_and_restores(append_only, tmp_path):
    url, environment, _, image = append_only
    listed = json.loads(run_cli("list", "-r", url, "--json", env=environment,
                                check=True).stdout)
    assert len(listed) == 2
    run_cli("restore", "-r", url, "latest", str(tmp_path / "back.img"), env=environment,
            check=True)
    assert (tmp_path / "back.img").read_bytes() == image.read_bytes()


@pytest.mark.parametrize("command", [["prune", "--keep-last", "1"], ["delete", "latest"],
                                     ["delete", "--all-of-series", "vm"]])
def test_prune_and_delete_from_an_append_only_client_are_refused_and_remove_nothing(
        append_only, command):
    url, environment, folder, _ = append_only
    before = contents(folder)
    result = run_cli(command[0], "-r", url, *command[1:], env=environment)
    assert_one_line_error(result, EXIT_NO_PERMISSION, "append-only", "nothing was removed")
    assert contents(folder) == before
    assert len(before) > 4 and [name for name in before if name.startswith("snapshots/")]
    # The writer lock was released as usual: the next backup is not kept waiting.
    assert not (folder / "lock").exists()


def test_a_hand_made_client_cannot_delete_overwrite_or_move_anything_stored(append_only):
    url, environment, folder, _ = append_only
    before = contents(folder)
    pack = next(name for name in before if name.startswith("packs/"))
    record = next(name for name in before if name.startswith("snapshots/"))
    backend = open_ssh_backend(url, environ=environment)
    try:
        attempts = [lambda: backend.delete(pack), lambda: backend.delete(record),
                    lambda: backend.delete("config"), lambda: backend.put(record, b"{}"),
                    lambda: backend.put("config", b"x"), lambda: backend.move(pack, "lock"),
                    lambda: backend.move("lock.spare", record),
                    lambda: backend.put_if_absent("snapshots/new.json", b"x",
                                                  reuse=record.split("/")[1])]
        for attempt in attempts:
            with pytest.raises(AppendOnlyRefused):
                attempt()
        upload = backend.open_upload(pack)
        upload.write(b"not the pack")
        with pytest.raises(AppendOnlyRefused):
            upload.complete()
        assert backend.list_unfinished("") == []
        # What the lock protocol needs still works; so does adding.
        backend.put("readers/0123456789abcdef0123456789abcdef.json", b"{}")
        backend.delete("readers/0123456789abcdef0123456789abcdef.json")
        assert backend.put_if_absent("protected/x", b"") is True
    finally:
        backend.close()
    after = contents(folder)
    assert after.pop("protected/x") and after == before


def test_an_append_only_client_may_neither_protect_nor_unprotect(append_only):
    """Both are exclusive operations, refused such a key at their first step: marks are set
    and cleared with an administrator's key."""
    url, environment, folder, _ = append_only
    before = contents(folder)
    for command in ("protect", "unprotect"):
        result = run_cli(command, "-r", url, "latest", env=environment)
        assert_one_line_error(result, EXIT_NO_PERMISSION, "append-only", "nothing was removed")
    assert contents(folder) == before
