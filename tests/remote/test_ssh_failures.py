"""What a user reads when an ``ssh://`` repository cannot be used: one line on stderr, no
traceback, exit 2 for a wrong URL, an unreachable host or refused key, diskvault missing on
the far side, something else answering there, or no repository at the path."""

from __future__ import annotations

import socket
import subprocess

import pytest

from diskvault.errors import EXIT_BAD_INPUT, RemoteFailed
from diskvault.store.backends import ssh as ssh_module
from diskvault.store.backends.ssh import open_ssh_backend

from ..cli.test_errors import assert_one_line_error
from ..conftest import run_cli


@pytest.mark.parametrize("url", ["ssh://", "ssh:///srv/repo", "ssh://host", "ssh://host/",
                                 "ssh://host/~", "ssh://-oProxyCommand=touch%20x/srv/repo",
                                 "ssh://-l@host/srv/repo", "ssh://host:99999/srv/repo",
                                 "ssh://host:port/srv/repo", "ssh://user:secret@host/srv",
                                 "ssh://host/srv/repo?x=1"])
def test_a_bad_ssh_url_is_refused_before_ssh_runs(url, tmp_path):
    marker = tmp_path / "ran"
    result = run_cli("list", "-r", url, env={"DISKVAULT_RSH": f"touch {marker}"})
    assert_one_line_error(result, EXIT_BAD_INPUT, "ssh://")
    assert not marker.exists()


def test_a_missing_ssh_client_is_named_not_taken_for_a_missing_far_side():
    result = run_cli("list", "-r", "ssh://backup@vault.invalid/srv/repo",
                     env={"DISKVAULT_RSH": "/nonexistent/ssh -o BatchMode=yes"})
    assert_one_line_error(result, EXIT_BAD_INPUT, "'/nonexistent/ssh' is not installed",
                          "DISKVAULT_RSH")


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens once the probe is closed


def test_an_unreachable_host_is_one_line_naming_the_url(ssh_environment):
    url = f"ssh://{ssh_environment.user}@127.0.0.1:{closed_port()}/~/repo"
    result = run_cli("list", "-r", url)
    assert_one_line_error(result, EXIT_BAD_INPUT, f"cannot reach {url}", "refused")


def test_a_key_the_server_refuses_is_one_line(ssh_environment, monkeypatch):
    unknown = ssh_environment.folder / "unknown"
    if not unknown.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(unknown)],
                       check=True)
    monkeypatch.setenv("DISKVAULT_RSH", ssh_environment.rsh(unknown))
    result = run_cli("list", "-r", ssh_environment.url("repo"))
    assert_one_line_error(result, EXIT_BAD_INPUT, "cannot reach", "Permission denied")


def test_diskvault_missing_on_the_far_side_is_one_line_saying_so(ssh_environment,
                                                                monkeypatch):
    monkeypatch.setenv("DISKVAULT_REMOTE_PATH", "/nonexistent/diskvault")
    result = run_cli("list", "-r", ssh_environment.url("repo"))
    assert_one_line_error(result, EXIT_BAD_INPUT, "diskvault is not installed on 127.0.0.1",
                          "DISKVAULT_REMOTE_PATH")


def test_something_else_answering_on_the_far_side_is_one_line(ssh_environment, monkeypatch):
    monkeypatch.setenv("DISKVAULT_REMOTE_PATH", "echo Welcome to the vault")
    result = run_cli("list", "-r", ssh_environment.url("repo"))
    assert_one_line_error(result, EXIT_BAD_INPUT, "something else than", "Welcome")


def test_a_missing_repository_is_one_line_naming_the_url(ssh_environment):
    url = ssh_environment.url("never-made")
    result = run_cli("list", "-r", url)
    assert_one_line_error(result, EXIT_BAD_INPUT, f"repository {url} does not exist",
                          f"diskvault init -r {url}")


def test_init_refuses_a_used_folder_on_the_far_side(ssh_environment):
    folder = ssh_environment.home / "used"
    folder.mkdir()
    (folder / "somebody's file").write_text("x")
    result = run_cli("init", "-r", ssh_environment.url("used"), "--encryption", "none")
    assert_one_line_error(result, EXIT_BAD_INPUT, "not an empty folder")
    assert sorted(p.name for p in folder.iterdir()) == ["somebody's file"]


def test_a_request_interrupted_before_its_reply_fails_the_channel_not_the_next_answer(
        ssh_environment, monkeypatch):
    """Ctrl-C between a request and its reply leaves that reply on the channel: the next
    request must fail, not take it for its own answer."""
    backend = open_ssh_backend(ssh_environment.url("interrupted-request"), create_folders=[])
    try:
        backend.put("x", b"one")

        def interrupted(stream):
            raise KeyboardInterrupt

        with monkeypatch.context() as patch:
            patch.setattr(ssh_module, "read_frame", interrupted)
            with pytest.raises(KeyboardInterrupt):
                backend.get("x")
        with pytest.raises(RemoteFailed, match="interrupted before its reply"):
            backend.stat("x")
    finally:
        backend.close()
