"""Prometheus figures: the text format node_exporter's textfile collector reads, replaced
whole, readable by the collector's user."""

import re
import stat
from datetime import datetime, timedelta, timezone

from diskvault.ops.metrics import metrics_file_name, render_metrics, write_metrics
from diskvault.ops.runs import Run

NOW = datetime(2026, 12, 7, 2, 30, tzinfo=timezone.utc)
SAMPLE = re.compile(r'^(diskvault_[a-z_]+)\{repository="((?:[^"\\]|\\.)*)",command="([a-z]+)",'
                    r'series="((?:[^"\\]|\\.)*)"\} (-?[0-9.e+]+)$')


def backup(minutes, exit_code=0, series="vm1", **figures):
    finished = NOW + timedelta(minutes=minutes)
    return Run("backup", series, finished - timedelta(seconds=90), finished, exit_code,
               "" if exit_code == 0 else "failed", figures)


def samples(text):
    found = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) diskvault_[a-z_]+ ", line), line
            continue
        match = SAMPLE.match(line)
        assert match, line
        found[(match[1], match[4])] = float(match[5])
    return found


def test_last_success_and_bytes_survive_a_later_failure():
    runs = [backup(0, bytes_read=1000, new_bytes=100, stored_bytes=40, size=4096),
            backup(1440, exit_code=74)]
    found = samples(render_metrics(runs, "s3://backups/vm1"))
    assert found[("diskvault_last_run_exit_code", "vm1")] == 74
    assert found[("diskvault_last_success_timestamp_seconds", "vm1")] == NOW.timestamp()
    assert found[("diskvault_last_success_duration_seconds", "vm1")] == 90
    assert found[("diskvault_backup_bytes_read", "vm1")] == 1000
    assert found[("diskvault_backup_stored_bytes", "vm1")] == 40


def test_label_values_are_escaped():
    text = render_metrics([backup(0, series='a"b\\c\nd')], 'C:\\odd "place"')
    assert 'series="a\\"b\\\\c\\nd"' in text
    assert 'repository="C:\\\\odd \\"place\\""' in text
    samples(text)


def test_file_is_replaced_whole_and_an_older_name_is_removed(tmp_path):
    (tmp_path / metrics_file_name("location-abc")).write_text("old")
    path = write_metrics(tmp_path, ["0123", "location-abc"], "x 1\n")
    path = write_metrics(tmp_path, ["0123", "location-abc"], "x 2\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    assert path.read_text() == "x 2\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # node_exporter runs as its own user
