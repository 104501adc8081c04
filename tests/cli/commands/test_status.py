"""status: each series' newest snapshot and its age from the repository, its failures from
this host's state folder (also for runs that could not open the repository), exit 3 when a
series is older than --max-age; the hooks and metrics of backup, prune and check."""

import json
import os
import sys
from pathlib import Path

from diskvault.store.format.config import REPOKEY_MODE
from diskvault.store.repository import Repository

from ...conftest import SMALL_CHUNKS, TEST_PASSPHRASE, run_cli

EXIT_OVERDUE = 3


def new_encrypted_repo(tmp_path):
    Repository.init(tmp_path / "repo", chunk_size=SMALL_CHUNKS, encryption=REPOKEY_MODE,
                    passphrase=TEST_PASSPHRASE).close()
    return str(tmp_path / "repo")


def status_json(repo, *extra):
    result = run_cli("status", "-r", repo, "--json", *extra)
    return result.returncode, json.loads(result.stdout)


def test_a_run_that_could_not_open_the_repository_shows_as_failing(tmp_path, make_image):
    repo = new_encrypted_repo(tmp_path)
    image = make_image(64 * 1024, name="vm1.img")
    run_cli("backup", "-r", repo, str(image), check=True)
    wrong = run_cli("backup", "-r", repo, str(image), env={"DISKVAULT_PASSWORD": "wrong"})
    assert wrong.returncode == 12
    code, found = status_json(repo, "--max-age", "36h")
    assert code == 0  # failing, but its newest snapshot is recent
    (series,) = found["series"]
    assert series["series"] == "vm1.img" and series["failing"] and not series["overdue"]
    assert series["last_failure"]["exit_code"] == 12
    assert series["last_failure"]["error"] == wrong.stderr.decode().strip().removeprefix(
        "diskvault: error: ")
    table = run_cli("status", "-r", repo, check=True).stdout.decode()
    assert "FAILING" in table and "backup exit 12" in table
    run_cli("backup", "-r", repo, str(image), check=True)
    (series,) = status_json(repo)[1]["series"]
    assert not series["failing"] and series["last_failure"]["exit_code"] == 12


def test_a_series_with_no_snapshot_is_overdue_with_exit_3(tmp_path, make_image):
    repo = new_encrypted_repo(tmp_path)
    run_cli("backup", "-r", repo, str(make_image(64 * 1024, name="vm1.img")), check=True)
    missing = run_cli("backup", "-r", repo, str(tmp_path / "db.img"), "--name", "db")
    assert missing.returncode == 2
    result = run_cli("status", "-r", repo, "--max-age", "36h")
    assert result.returncode == EXIT_OVERDUE
    assert result.stderr.decode().startswith("diskvault: error: 1 series overdue")
    assert "db (none)" in result.stderr.decode()
    assert "OVERDUE" in result.stdout.decode()
    assert run_cli("status", "-r", repo).returncode == 0  # no limit, no alarm


def test_hooks_are_told_what_happened_and_metrics_follow_every_run(tmp_path, make_image):
    repo = new_encrypted_repo(tmp_path)
    image = make_image(64 * 1024, name="vm1.img")
    said = tmp_path / "said.json"
    hook = (f"{sys.executable} -c \"import os, json; json.dump(dict(os.environ), "
            f"open('{said}', 'w'))\"")
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    run_cli("backup", "-r", repo, str(image), "--on-success", hook, "--metrics-dir",
            str(metrics), check=True)
    told = json.loads(said.read_text())
    assert told["DISKVAULT_EVENT"] == "success" and told["DISKVAULT_SERIES"] == "vm1.img"
    assert len(told["DISKVAULT_SNAPSHOT"]) == 16 and "DISKVAULT_PASSWORD" not in told
    failed = run_cli("check", "-r", repo, "--on-failure", hook, "--metrics-dir", str(metrics),
                     env={"DISKVAULT_PASSWORD": "wrong"})
    assert failed.returncode == 12
    told = json.loads(said.read_text())
    assert (told["DISKVAULT_EVENT"], told["DISKVAULT_COMMAND"], told["DISKVAULT_EXIT_CODE"]) \
        == ("failure", "check", "12")
    (prom,) = metrics.iterdir()
    text = prom.read_text()
    assert 'diskvault_last_run_exit_code{repository="%s",command="check",series=""} 12' \
        % repo in text
    assert 'diskvault_backup_bytes_read{repository="%s",command="backup",series="vm1.img"} ' \
        '65536' % repo in text
    run_cli("check", "-r", repo, "--read-data", check=True)
    shown = run_cli("status", "-r", repo, check=True).stdout.decode()
    assert "check: " in shown and "structure and data: no damage found" in shown


def test_a_hook_that_fails_is_a_warning_not_a_failed_backup(tmp_path, make_image):
    repo = new_encrypted_repo(tmp_path)
    result = run_cli("backup", "-r", repo, str(make_image(4096, name="vm1.img")),
                     "--on-success", "false")
    assert result.returncode == 0
    assert b"warning: the success hook failed: false exited with code 1" in result.stderr


def test_a_run_that_cannot_be_remembered_is_a_warning(tmp_path, make_image):
    repo = new_encrypted_repo(tmp_path)
    runs = Path(os.environ["XDG_STATE_HOME"]) / "diskvault" / "runs"
    runs.parent.mkdir(parents=True, exist_ok=True)  # init may have made it
    runs.write_text("")  # a file where the folder of runs would go
    result = run_cli("backup", "-r", repo, str(make_image(4096, name="vm1.img")))
    assert result.returncode == 0
    assert b"cannot remember this run in the state folder" in result.stderr
    assert runs.read_text() == ""


def test_a_check_that_finds_damage_is_shown_as_failed(tmp_path, make_image):
    repo = tmp_path / "repo"
    run_cli("init", "-r", str(repo), "--encryption", "none", check=True)
    run_cli("backup", "-r", str(repo), str(make_image(256 * 1024, name="vm1.img")),
            check=True)
    run_cli("check", "-r", str(repo), "--read-data", check=True)
    pack = max(repo.glob("packs/*/*.pack"), key=lambda path: path.stat().st_size)
    with open(pack, "r+b") as handle:  # a byte in the middle of the chunk data
        handle.seek(pack.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0x40]))
    damaged = run_cli("check", "-r", str(repo), "--read-data")
    assert damaged.returncode == 1
    shown = run_cli("status", "-r", str(repo), check=True).stdout.decode()
    assert "structure and data: FAILED (exit 1): check found damage" in shown
