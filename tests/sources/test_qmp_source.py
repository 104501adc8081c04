"""What `backup qmp+unix://` refuses before any guest is asked anything (the guest itself:
test_running_guest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from diskvault.errors import SourceError
from diskvault.sources.running_guest import GuestDrive, parse_qmp_uri

from ..conftest import run_cli


@pytest.mark.parametrize("uri, expected", [
    ("qmp+unix:///run/vm1.qmp?drive=disk0", GuestDrive(Path("/run/vm1.qmp"), "disk0")),
    ("qmp+unix:///run/vm%201.qmp", GuestDrive(Path("/run/vm 1.qmp"), None)),
])
def test_a_qmp_uri_names_the_monitor_socket_and_the_drive(uri, expected):
    assert parse_qmp_uri(uri) == expected


@pytest.mark.parametrize("uri", ["qmp+unix://host/run/vm1.qmp", "qmp+unix://",
                                 "qmp+unix:///run/vm1.qmp?disk=a",
                                 "qmp+unix:///run/vm1.qmp?drive=a&drive=b"])
def test_a_malformed_qmp_uri_is_refused_with_its_form(uri):
    with pytest.raises(SourceError, match=r"qmp\+unix:///PATH/TO/SOCKET\?drive=NAME"):
        parse_qmp_uri(uri)


@pytest.mark.parametrize("args, says", [
    (["qmp+unix:///run/vm1.qmp"], "a URI names no file: give the series with --name"),
    (["qmp+unix:///run/vm1.qmp", "--name", "vm1", "--raw"], "--raw is for a disk-image file"),
    (["IMAGE", "--freeze", "/run/vm1.qga"], "--freeze freezes a running QEMU guest"),
    (["qmp+unix:///run/vm1.qmp", "--name", "vm1", "--freeze-timeout", "3"],
     "--freeze-timeout bounds a --freeze"),
])
def test_backup_options_that_do_not_fit_a_running_guest_are_refused(repo, make_image, args,
                                                                     says):
    image = make_image(1024 * 1024)
    args = [str(image) if arg == "IMAGE" else arg for arg in args]
    result = run_cli("backup", "-r", str(repo.root), *args)
    assert result.returncode == 2 and says in result.stderr.decode()


def test_a_monitor_socket_that_is_not_there_is_one_line_and_exit_2(repo, tmp_path):
    result = run_cli("backup", "-r", str(repo.root), f"qmp+unix://{tmp_path}/none.qmp",
                     "--name", "vm1")
    error = result.stderr.decode()
    assert result.returncode == 2, error
    assert error.count("\n") == 1 and "cannot reach the QEMU monitor at" in error
    assert "No such file or directory" in error
