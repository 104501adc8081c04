"""The status page (``diskvault report --html``): one self-contained HTML file, its style and
plots inline, no script, no font or image from anywhere, so it opens from a mail attachment
or a file share as well as from a web server. Made from plain values: the repository's
snapshot records and the runs this host remembers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from html import escape

from ..store.format.snapshots import SnapshotRecord
from .health import LatestSnapshot, describe_age, last_check, series_health
from .plots import FormatBytes, Mark, NightBytes, bytes_svg, timeline_svg
from .runs import Run

SHOWN_FAILURES = 8  # per series: the newest; the state folder keeps more

STYLE = """
:root { --ink:#1d2433; --muted:#667085; --line:#e4e7ec; --good:#12b76a; --bad:#f04438;
  --warn:#f79009; --new:#a4bcfd; --stored:#3538cd; --card:#fff; --page:#f4f6fa; }
* { box-sizing:border-box; }
body { margin:0; background:var(--page); color:var(--ink);
  font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif; }
header { background:#101828; color:#fff; padding:22px 32px; }
header h1 { margin:0; font-size:22px; font-weight:600; }
header .where { color:#d0d5dd; font-family:ui-monospace,"DejaVu Sans Mono",monospace;
  font-size:13px; margin-top:4px; }
main { max-width:1080px; margin:0 auto; padding:24px 32px 48px; }
.summary { display:grid; grid-template-columns:repeat(auto-fit,minmax(180px,1fr)); gap:14px;
  margin-bottom:24px; }
.figure, .card { background:var(--card); border:1px solid var(--line); border-radius:10px; }
.figure { padding:14px 16px; }
.figure .label { color:var(--muted); font-size:12px; text-transform:uppercase;
  letter-spacing:.05em; }
.figure .value { font-size:22px; font-weight:600; margin-top:2px; }
.figure .note { color:var(--muted); font-size:13px; }
.card { padding:18px 20px; margin-bottom:20px; }
.card h2 { margin:0; font-size:18px; display:flex; align-items:center; gap:10px; }
.badge { font-size:12px; font-weight:600; padding:2px 9px; border-radius:999px; color:#fff; }
.badge.ok { background:var(--good); } .badge.failing { background:var(--bad); }
.badge.none { background:var(--warn); }
.facts { color:var(--muted); font-size:13px; margin:4px 0 12px; }
.plots { display:grid; grid-template-columns:1fr 1fr; gap:16px; }
.plots h3 { font-size:13px; font-weight:600; color:var(--muted); margin:0 0 4px; }
.legend span { display:inline-block; width:10px; height:10px; border-radius:2px;
  margin:0 4px 0 10px; vertical-align:-1px; }
svg.plot { width:100%; height:auto; display:block; }
svg .axis { stroke:#98a2b3; } svg .grid, svg .lane-line { stroke:var(--line); }
svg .tick, svg .lane, svg .empty { fill:var(--muted); font-size:11px; }
svg .good { fill:var(--good); } svg .bad { stroke:var(--bad); stroke-width:2.5; fill:none; }
svg .now { stroke:#98a2b3; stroke-dasharray:3 3; }
svg .new { fill:var(--new); } svg .stored { fill:var(--stored); }
table { width:100%; border-collapse:collapse; font-size:13px; margin-top:12px; }
th { text-align:left; color:var(--muted); font-weight:600; border-bottom:1px solid var(--line);
  padding:4px 6px; }
td { padding:4px 6px; border-bottom:1px solid var(--line); vertical-align:top; }
td.error { color:#b42318; }
footer { color:var(--muted); font-size:12px; text-align:center; margin-top:24px; }
@media (max-width:760px) { .plots { grid-template-columns:1fr; } }
"""


def _when(time: datetime) -> str:
    return f"{time.astimezone(timezone.utc):%Y-%m-%d %H:%M} UTC"


def _figure(label: str, value: str, note: str = "") -> str:
    return (f'<div class="figure"><div class="label">{escape(label)}</div>'
            f'<div class="value">{escape(value)}</div><div class="note">{escape(note)}</div>'
            f'</div>')


def _ratio(data_bytes: int, stored_bytes: int) -> str:
    return f"{data_bytes / stored_bytes:.1f}x" if stored_bytes else "-"


def _failures_table(failures: Sequence[Run]) -> str:
    if not failures:
        return ""
    rows = "".join(f"<tr><td>{_when(run.finished)}</td><td>{escape(run.command)}</td>"
                   f"<td>{run.exit_code}</td><td class=\"error\">{escape(run.error)}</td></tr>"
                   for run in reversed(failures[-SHOWN_FAILURES:]))
    return ("<table><thead><tr><th>failed</th><th>command</th><th>exit</th><th>error</th>"
            f"</tr></thead><tbody>{rows}</tbody></table>")


def _series_card(name: str, records: Sequence[SnapshotRecord], runs: Sequence[Run], health,
                 now: datetime, format_bytes: FormatBytes) -> str:
    failures = [run for run in runs if not run.succeeded]
    if health.latest is None:
        badge, state = "none", "no snapshot"
    elif health.failing:
        badge, state = "failing", "last run failed"
    else:
        badge, state = "ok", "ok"
    data = sum(r.size - r.stats.zero_bytes for r in records)
    stored = sum(r.stats.stored_bytes for r in records)
    facts = [f"{len(records)} snapshots"]
    if health.latest is not None:
        facts.append(f"newest {_when(health.latest.time)} ({describe_age(health.age)} ago)")
        facts.append(f"image {format_bytes(records[-1].size)}")
    facts.append(f"dedup {_ratio(data, stored)} (data / stored)")
    marks = [Mark(r.time, True, f"{r.short_id} {_when(r.time)}") for r in records]
    marks += [Mark(run.finished, False, f"{run.command} failed {_when(run.finished)}: "
                                        f"{run.error}") for run in failures]
    nights = [NightBytes(r.time, r.stats.new_bytes, r.stats.stored_bytes) for r in records]
    return (f'<section class="card"><h2>{escape(name)} <span class="badge {badge}">'
            f'{escape(state)}</span></h2><div class="facts">{escape(" · ".join(facts))}</div>'
            f'<div class="plots"><div><h3>Snapshots and failures over time</h3>'
            f'{timeline_svg(f"snapshots and failed runs of {name}", marks, now)}</div>'
            f'<div><h3>Bytes per snapshot<span class="legend"><span style="background:'
            f'var(--new)"></span>new<span style="background:var(--stored)"></span>stored'
            f'</span></h3>{bytes_svg(f"new and stored bytes of {name}", nights, format_bytes)}'
            f'</div></div>{_failures_table(failures)}</section>')


def _check_figure(check: Run | None) -> str:
    if check is None:
        return _figure("last check", "never", "from this host")
    scope = "every byte read" if check.figures.get("read_data") else "structure only"
    outcome = "passed" if check.succeeded else "FAILED"
    return _figure("last check", outcome, f"{_when(check.finished)}, {scope}"
                   + ("" if check.succeeded else f": {check.error}"))


def render_report(location: str, records: Sequence[SnapshotRecord], runs: Sequence[Run],
                  stored_bytes: int, now: datetime, format_bytes: FormatBytes) -> str:
    """The page's HTML."""
    ordered = sorted(records, key=lambda r: r.time)
    latest = {r.name: LatestSnapshot(r.id, r.time) for r in ordered}
    health = series_health(latest, runs, now)
    data = sum(r.size - r.stats.zero_bytes for r in ordered)
    failing = sum(1 for h in health if h.failing or h.latest is None)
    summary = "".join([
        _figure("series", str(len(health)), f"{failing} need a look" if failing else "all ok"),
        _figure("snapshots", str(len(ordered)),
                f"newest {_when(ordered[-1].time)}" if ordered else "none yet"),
        _figure("stored", format_bytes(stored_bytes),
                f"for {format_bytes(data)} of data, {_ratio(data, stored_bytes)}"),
        _check_figure(last_check(runs))])
    cards = "".join(_series_card(h.series, [r for r in ordered if r.name == h.series],
                                 [run for run in runs if run.series == h.series], h, now,
                                 format_bytes) for h in health)
    whole = [run for run in runs if run.series is None and not run.succeeded]
    if whole:
        cards += (f'<section class="card"><h2>Whole repository</h2>'
                  f'{_failures_table(whole)}</section>')
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>diskvault: {escape(location)}</title><style>{STYLE}</style></head>'
            f'<body><header><h1>diskvault status</h1><div class="where">{escape(location)}'
            f'</div></header><main><div class="summary">{summary}</div>{cards}'
            f'<footer>made {_when(now)} by diskvault report; failures and checks as this '
            f'host remembers them</footer></main></body></html>\n')
