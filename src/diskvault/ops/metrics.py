"""Figures for Prometheus, in its text format, for node_exporter's textfile collector: one
file per repository (``diskvault-<repository id>.prom``) in a folder the user names, replaced
whole and atomically so the collector never reads half of it. Made from the runs this host
remembers, so a failed run updates it too.

Written here rather than with prometheus_client: the format is a few lines of text, and the
client's own textfile writer follows links and creates files non-exclusively, which every
file diskvault creates must not (store/host/durable.py does it right)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..store.host.durable import atomic_replacement, write_all
from .runs import Run

PREFIX = "diskvault_"
# The one file diskvault makes readable by others: node_exporter runs as its own user, and
# nothing in it is secret (series names, times, byte counts, the repository's location).
METRICS_FILE_MODE = 0o644

# name, help, what it reads from a run (None: absent); gauges all.
LAST_RUN = [
    ("last_run_timestamp_seconds", "When the newest run ended (Unix time).",
     lambda run: run.finished.timestamp()),
    ("last_run_exit_code", "Exit code of the newest run (0: success).",
     lambda run: run.exit_code),
    ("last_run_duration_seconds", "How long the newest run took.",
     lambda run: run.duration_s),
]
LAST_SUCCESS = [
    ("last_success_timestamp_seconds", "When the newest successful run ended (Unix time).",
     lambda run: run.finished.timestamp()),
    ("last_success_duration_seconds", "How long the newest successful run took.",
     lambda run: run.duration_s),
    ("backup_bytes_read", "Bytes the newest successful backup read from its source.",
     lambda run: run.figures.get("bytes_read")),
    ("backup_new_bytes", "Bytes of new data the newest successful backup found.",
     lambda run: run.figures.get("new_bytes")),
    ("backup_stored_bytes", "Bytes the newest successful backup added to the repository.",
     lambda run: run.figures.get("stored_bytes")),
    ("backup_image_bytes", "Size of the image the newest successful backup saved.",
     lambda run: run.figures.get("size")),
]


def metrics_file_name(repository_key: str) -> str:
    return f"diskvault-{repository_key}.prom"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")


def _number(value) -> str:
    return str(value) if isinstance(value, int) else repr(float(value))


def render_metrics(runs: Sequence[Run], location: str) -> str:
    """The text of the file: for each (command, series), its newest run and its newest
    successful run. Labels: repository (its location), command, series ("" for a run over
    the whole repository)."""
    newest: dict[tuple[str, str], Run] = {}
    newest_good: dict[tuple[str, str], Run] = {}
    for run in sorted(runs, key=lambda r: r.finished):
        key = (run.command, run.series or "")
        newest[key] = run
        if run.succeeded:
            newest_good[key] = run
    lines = []
    for table, chosen in ((LAST_RUN, newest), (LAST_SUCCESS, newest_good)):
        for name, help_text, value_of in table:
            samples = [(key, value_of(run)) for key, run in sorted(chosen.items())]
            samples = [(key, value) for key, value in samples if value is not None]
            if not samples:
                continue
            lines += [f"# HELP {PREFIX}{name} {help_text}", f"# TYPE {PREFIX}{name} gauge"]
            lines += [f'{PREFIX}{name}{{repository="{_label(location)}",command="{command}",'
                      f'series="{_label(series)}"}} {_number(value)}'
                      for (command, series), value in samples]
    return "\n".join(lines) + "\n"


def write_metrics(folder: Path, repository_keys: Sequence[str], text: str) -> Path:
    """Replace the repository's file in ``folder`` (which must exist) with ``text``, under
    its first key; a file under another of its keys (written before its id was known) is
    removed, so the collector never sees a series twice."""
    path = Path(folder) / metrics_file_name(repository_keys[0])
    with atomic_replacement(path, METRICS_FILE_MODE) as fd:
        write_all(fd, text.encode())
    for superseded in repository_keys[1:]:
        (Path(folder) / metrics_file_name(superseded)).unlink(missing_ok=True)
    return path
