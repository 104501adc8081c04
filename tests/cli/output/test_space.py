"""The space figures: zero runs are counted apart, never as a saving. The one ratio is data
bytes (image bytes minus zero runs) per stored byte, in backup, info, the demo and JSON."""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import pytest

from ...conftest import run_cli

MiB = 1024 * 1024


@pytest.fixture
def mostly_zeros(tmp_path: Path) -> Path:
    """16 MiB: a hole and written zeros, then 2 MiB of incompressible data. Zeros first:
    they are cut every max_bytes from the start, so the data starts on a cut (zeros after
    data would share the data's last chunk)."""
    image = tmp_path / "vm.img"
    with open(image, "wb") as handle:
        handle.seek(4 * MiB)
        handle.write(bytes(10 * MiB))
        handle.write(random.Random(3).randbytes(2 * MiB))
    return image


def ratio_in(text: str, label: str) -> float:
    return float(re.search(label + r"\s*([0-9.]+)x", text).group(1))


def test_zeros_are_not_counted_as_dedup_in_backup_and_info(tmp_path, mostly_zeros):
    repo = str(tmp_path / "repo")
    run_cli("init", "-r", repo, check=True)
    first = json.loads(run_cli("backup", "-r", repo, str(mostly_zeros), "--json",
                               check=True).stdout)
    space = first["space"]
    assert space["image_bytes"] == 16 * MiB and space["zero_bytes"] == 14 * MiB
    assert space["data_bytes"] == 2 * MiB
    assert 0.9 < space["data_per_stored"] < 1.1  # random data: no saving at all

    summary = run_cli("backup", "-r", repo, str(mostly_zeros), check=True).stdout.decode()
    assert "2.0 MiB data + 14.0 MiB zeros" in summary

    repository = json.loads(run_cli("info", "-r", repo, "--json", check=True).stdout)
    assert repository["repository"]["space"]["zero_bytes"] == 28 * MiB
    assert repository["repository"]["space"]["data_bytes"] == 4 * MiB
    human = run_cli("info", "-r", repo, check=True).stdout.decode()
    assert 1.8 < ratio_in(human, "saving") < 2.2  # two copies of the data, stored once
    snapshot = run_cli("info", "-r", repo, first["id"], check=True).stdout.decode()
    assert 0.9 < ratio_in(snapshot, "dedup") < 1.1
    listed = json.loads(run_cli("list", "-r", repo, "--json", check=True).stdout)
    assert [s["space"]["zero_bytes"] for s in listed] == [14 * MiB, 14 * MiB]


@pytest.mark.skipif(not (shutil.which("mkfs.ext4") or Path("/sbin/mkfs.ext4").exists()),
                    reason="the demo needs e2fsprogs")
def test_the_demo_reports_data_per_stored_byte_with_zeros_apart(tmp_path):
    result = run_cli("demo", "--workdir", str(tmp_path / "demo"), check=True)
    last = result.stdout.decode().splitlines()[-2]
    assert last.startswith("dedup:") and " zeros" in last
    # Four nights of an image whose data is mostly random: the honest figure is
    # about the number of nights, not the 8.7x that counting zeros made of it.
    assert 2.0 < float(re.search(r"\(([0-9.]+)x smaller", last).group(1)) < 4.5
