"""The units and crontab lines `diskvault schedule` writes: systemd-analyze finds nothing
wrong with the units, their commands run with the passphrase read from the credentials
folder, and the crontab line runs as cron runs it (sh -c, PATH=/usr/bin:/bin)."""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from diskvault.ops.schedule import Schedule, parse_clock, systemd_units, unit_prefix
from diskvault.store.format.config import REPOKEY_MODE
from diskvault.store.repository import Repository

from ..conftest import SMALL_CHUNKS, TEST_PASSPHRASE, run_cli

CRON_PATH = "/usr/bin:/bin"
PROGRAM = Path(sys.executable).parent / "diskvault"


@pytest.fixture
def encrypted_repo(tmp_path):
    Repository.init(tmp_path / "repo", chunk_size=SMALL_CHUNKS, encryption=REPOKEY_MODE,
                    passphrase=TEST_PASSPHRASE).close()
    passphrase = tmp_path / "vm1.passphrase"
    passphrase.write_text(TEST_PASSPHRASE + "\n")
    passphrase.chmod(0o600)
    return tmp_path / "repo", passphrase


def cron_environment(tmp_path) -> dict[str, str]:
    """What cron gives a job (no DISKVAULT_PASSWORD), plus where the tests' code is."""
    return {"PATH": CRON_PATH, "HOME": str(tmp_path), "SHELL": "/bin/sh", "LOGNAME": "root",
            "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
            "XDG_STATE_HOME": os.environ["XDG_STATE_HOME"],
            "DISKVAULT_INSECURE_TEST_KDF": "1"}


def snapshot_names(repo: Path) -> list[str]:
    with Repository.open(repo, TEST_PASSPHRASE) as repository:
        return [record.name for record in repository.list_snapshots()]


@pytest.mark.skipif(not PROGRAM.exists(), reason=f"no diskvault command next to {sys.executable}")
def test_crontab_line_runs_under_cron_path_with_sh(tmp_path, make_image, encrypted_repo):
    repo, passphrase = encrypted_repo
    image = make_image(256 * 1024, name="vm1 disk%1.img")  # a space and cron's %
    result = run_cli("schedule", "cron", "-r", str(repo), str(image), "--name", "vm1",
                     "--passphrase-file", str(passphrase), "--keep-daily", "2", check=True)
    comment, backup_line, check_line = result.stdout.decode().splitlines()
    assert comment.startswith("#")
    assert re.fullmatch(r"30 2 \* \* \* /\S+/diskvault backup .*", backup_line)
    assert check_line.startswith("30 4 * * 0 /")
    assert "%" not in backup_line.replace("\\%", "")  # cron would cut the line there
    for line in (backup_line, backup_line, check_line):
        command = line.split(" ", 5)[5].replace("\\%", "%")  # as cron hands it to sh
        done = subprocess.run(["/bin/sh", "-c", command], env=cron_environment(tmp_path),
                              capture_output=True, timeout=300)
        assert done.returncode == 0, done.stderr.decode()
        assert done.stdout == b""  # a summary every night is not worth a mail
    # two nights' lines ran on one day: the prune after the second kept the day's newest
    assert snapshot_names(repo) == ["vm1"]


def systemd_exec_lines(unit: str) -> list[list[str]]:
    """The ExecStart= commands of a unit, unquoted as systemd does for these simple forms."""
    lines = [line.removeprefix("ExecStart=") for line in unit.splitlines()
             if line.startswith("ExecStart=")]
    return [[word.replace("%%", "%").replace("$$", "$") for word in shlex.split(line)]
            for line in lines]


@pytest.mark.skipif(not shutil.which("systemd-analyze"),
                    reason="systemd-analyze is missing (apt-get install systemd)")
@pytest.mark.skipif(not PROGRAM.exists(), reason=f"no diskvault command next to {sys.executable}")
def test_systemd_units_verify_clean_and_their_commands_work(tmp_path, make_image,
                                                            encrypted_repo):
    repo, passphrase = encrypted_repo
    image = make_image(256 * 1024, name="vm1.img")
    units = tmp_path / "units"
    units.mkdir()
    run_cli("schedule", "systemd", "-r", str(repo), str(image), "--name", "vm1",
            "--passphrase-file", str(passphrase), "--on-failure", "logger -t diskvault failed",
            "--metrics-dir", str(tmp_path), "--out", str(units), check=True)
    names = sorted(path.name for path in units.iterdir())
    assert names == ["diskvault-vm1-backup.service", "diskvault-vm1-backup.timer",
                     "diskvault-vm1-check.service", "diskvault-vm1-check.timer"]
    verified = subprocess.run(["systemd-analyze", "verify", "--man=no", *names], cwd=units,
                              capture_output=True, timeout=120)
    assert verified.returncode == 0 and verified.stderr == b"", verified.stderr.decode()
    service = (units / "diskvault-vm1-backup.service").read_text()
    assert f"LoadCredential=diskvault-passphrase:{passphrase}" in service
    assert "DISKVAULT_PASSWORD" not in service
    # What systemd would run, with %d the credentials folder it fills from the file
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    shutil.copy(passphrase, credentials / "diskvault-passphrase")
    environ = cron_environment(tmp_path)
    for unit in ("diskvault-vm1-backup.service", "diskvault-vm1-check.service"):
        for command in systemd_exec_lines((units / unit).read_text()):
            command = [word.replace("%d", str(credentials)) for word in command]
            done = subprocess.run(command, env=environ, capture_output=True, timeout=300)
            assert done.returncode == 0, done.stderr.decode()
    assert snapshot_names(repo) == ["vm1"]
    assert list(tmp_path.glob("diskvault-*.prom"))


def test_unit_files_are_never_overwritten(tmp_path, make_image):
    image = make_image(4096, name="vm1.img")
    units = tmp_path / "units"
    units.mkdir()
    (units / "diskvault-vm1-check.timer").write_text("mine")
    result = run_cli("schedule", "systemd", "-r", str(tmp_path / "repo"), str(image),
                     "--name", "vm1", "--program", "/usr/bin/true", "--out", str(units))
    assert result.returncode == 2
    assert b"diskvault-vm1-check.timer exists" in result.stderr
    assert [p.name for p in units.iterdir()] == ["diskvault-vm1-check.timer"]  # none written
    assert (units / "diskvault-vm1-check.timer").read_text() == "mine"


def test_times_are_read_strictly():
    assert parse_clock("2:05").on_calendar() == "*-*-* 02:05:00"
    assert parse_clock("Sun 04:30", weekly=True).cron() == "30 4 * * 0"
    for bad, weekly in (("25:00", False), ("sun 04:30", False), ("04:30", True),
                        ("someday 1:00", True)):
        with pytest.raises(ValueError):
            parse_clock(bad, weekly)
    result = run_cli("schedule", "cron", "-r", "/r", "/x.img", "--at", "3pm")
    assert result.returncode == 2 and b"a time such as 02:30" in result.stderr


def odd_schedule(tmp_path, **changes) -> Schedule:
    """A schedule with everything systemd could misread: spaces, %, $, quotes, a series name
    that is no unit name."""
    base = dict(program=PROGRAM, repository=str(tmp_path / "re po%1"),
                source=tmp_path / "vm $1 \"a\".img", series="vm/1 ü",
                backup_at=parse_clock("01:05"), check_at=parse_clock("sat 23:59", weekly=True),
                keep={"daily": 3}, on_failure="sh -c 'echo \"$DISKVAULT_ERROR\" >&2'",
                passphrase_file=tmp_path / "pass phrase", environment={"A_B": "x %y \"z\""})
    return Schedule(**{**base, **changes})


@pytest.mark.skipif(not shutil.which("systemd-analyze"),
                    reason="systemd-analyze is missing (apt-get install systemd)")
@pytest.mark.skipif(not PROGRAM.exists(), reason=f"no diskvault command next to {sys.executable}")
@pytest.mark.parametrize("variant", ["local", "s3-device-encrypted"])
def test_odd_names_survive_systemd_quoting(tmp_path, variant):
    changes = {} if variant == "local" else dict(
        repository="s3://backups/vm1", source_is_device=True,
        source=Path("/dev/loop0"), passphrase_file=None,
        encrypted_credential=tmp_path / "vm1.cred")
    schedule = odd_schedule(tmp_path, **changes)
    units = systemd_units(schedule)
    folder = tmp_path / "units"
    folder.mkdir()
    for name, text in units.items():
        (folder / name).write_text(text)
    verified = subprocess.run(["systemd-analyze", "verify", "--man=no", *units], cwd=folder,
                              capture_output=True, timeout=120)
    assert verified.returncode == 0 and verified.stderr == b"", verified.stderr.decode()
    service = units[f"{unit_prefix(schedule.series)}-backup.service"]
    backup, prune = systemd_exec_lines(service)
    assert backup[:5] == [str(PROGRAM), "backup", "--no-progress", "-r", schedule.repository]
    assert backup[5] == str(schedule.source) and backup[7] == schedule.series
    assert schedule.on_failure in backup and "--keep-daily=3" in prune
    if variant == "local":
        assert "PrivateDevices=yes" in service and "ReadWritePaths=" in service
    else:
        assert "DeviceAllow=/dev/loop0 r" in service and "PrivateDevices" not in service
        assert "ReadWritePaths" not in service  # nothing local to write but state and cache
