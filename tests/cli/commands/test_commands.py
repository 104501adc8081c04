"""The command line through a real subprocess: the nightly job, end to end."""

from __future__ import annotations

import hashlib
import json

from tests.conftest import run_cli


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_nightly_backup_list_info_restore_cat_diff(tmp_path, make_image):
    repo = str(tmp_path / "repo")
    image = make_image(3_000_000, "mixed", seed=1, name="vm1.img")
    night1 = image.read_bytes()
    assert run_cli("init", "-r", repo, check=True).returncode == 0

    first = run_cli("backup", "-r", repo, str(image), "--name", "vm1", check=True)
    summary = first.stdout.decode()
    assert summary.startswith("snapshot ") and "(vm1) saved:" in summary
    assert b"\r" not in first.stderr  # no progress line when stderr is not a terminal

    with open(image, "r+b") as handle:
        handle.seek(1_500_000)
        handle.write(b"night two" * 10)
    second = json.loads(run_cli("backup", "-r", repo, str(image), "--name", "vm1", "--json",
                                "--tag", "nightly", check=True).stdout)
    assert second["name"] == "vm1" and second["tags"] == ["nightly"]
    assert 0 < second["stats"]["new_bytes"] < 3 * 262_144  # the chunks around the write
    assert second["size"] == len(night1)

    listed = json.loads(run_cli("list", "-r", repo, "--json", check=True).stdout)
    assert [s["name"] for s in listed] == ["vm1", "vm1"]
    first_id = listed[0]["id"]
    table = run_cli("list", "-r", repo, check=True).stdout.decode()
    assert first_id[:8] in table and "NEW STORED" in table

    info = json.loads(run_cli("info", "-r", repo, "vm1", "--json", check=True).stdout)
    assert info["snapshot"]["id"] == second["id"]
    assert info["repository"]["snapshots"] == 2 and info["repository"]["format_version"] == 3
    assert "dedup" in run_cli("info", "-r", repo, "vm1", check=True).stdout.decode()

    target = tmp_path / "restored.img"
    run_cli("restore", "-r", repo, first_id[:6], str(target), check=True)
    assert target.read_bytes() == night1

    streamed = run_cli("cat", "-r", repo, "latest", check=True).stdout
    assert sha256(streamed) == sha256(image.read_bytes())

    changed = json.loads(run_cli("diff", "-r", repo, first_id, "latest", "--json",
                                 check=True).stdout)
    assert len(changed["ranges"]) == 1
    assert changed["ranges"][0]["start"] <= 1_500_000 < changed["ranges"][0]["end"]


def test_repository_from_environment_variable(tmp_path, make_image):
    env = {"DISKVAULT_REPO": str(tmp_path / "repo")}
    run_cli("init", env=env, check=True)
    run_cli("backup", str(make_image(100_000)), "--name", "x", env=env, check=True)
    listed = json.loads(run_cli("list", "--json", env=env, check=True).stdout)
    assert len(listed) == 1 and listed[0]["name"] == "x"


def test_init_records_chunk_size_and_compression(tmp_path):
    repo = tmp_path / "repo"
    run_cli("init", "-r", str(repo), "--chunk-size", "16384", "--compression", "zstd:9",
            check=True)
    config = json.loads((repo / "config").read_text())
    assert config["chunker"]["avg_bytes"] == 16384
    assert config["compression"] == {"codec": "zstd", "level": 9}
    assert config["version"] == 3
    assert config["encryption"] == {"mode": "repokey-aes-256-gcm"} and "mac" in config


def test_bad_chunk_size_and_compression_are_refused(tmp_path):
    bad_size = run_cli("init", "-r", str(tmp_path / "a"), "--chunk-size", "1000")
    assert bad_size.returncode == 2 and b"power of two" in bad_size.stderr
    bad_codec = run_cli("init", "-r", str(tmp_path / "b"), "--compression", "lz4")
    assert bad_codec.returncode == 2 and b"unknown compression" in bad_codec.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_restore_refuses_a_series_name_that_is_also_an_id_prefix_and_a_short_prefix(
        tmp_path, make_image):
    repo = str(tmp_path / "repo")
    run_cli("init", "-r", repo, "--encryption", "none", check=True)
    image = make_image(100_000, seed=2)
    first = json.loads(run_cli("backup", "-r", repo, str(image), "--name", "vm1", "--json",
                               check=True).stdout)["id"]
    run_cli("backup", "-r", repo, str(image), "--name", first[:6], check=True)
    for selector in (first[:6], first[:1]):
        result = run_cli("restore", "-r", repo, selector, str(tmp_path / "out.img"))
        assert result.returncode == 2, result.stderr
        assert result.stderr.decode().count("\n") == 1
        assert not (tmp_path / "out.img").exists()
    deleted = run_cli("delete", "-r", repo, first[:6])
    assert deleted.returncode == 2 and first[:8] in deleted.stderr.decode()
    assert len(json.loads(run_cli("list", "-r", repo, "--json", check=True).stdout)) == 2
