"""Small SVG plots for the status page, drawn from plain values as text: no plotting
library, no script, nothing fetched. Each returns one ``<svg>`` element that scales to its
container (viewBox) and says what it shows in a ``<title>``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape

WIDTH, HEIGHT = 640, 150
LEFT, RIGHT, TOP, BOTTOM = 64, 12, 14, 26  # room for the axis labels
FIRST_BAR_CLIP = 4  # a first bar this many times the others' tallest is cut
FormatBytes = Callable[[float], str]  # the CLI's own, so the page reads as the terminal does


@dataclass(frozen=True)
class Mark:
    """One event on a time line: a snapshot (good) or a failed run."""

    time: datetime
    good: bool
    label: str


@dataclass(frozen=True)
class NightBytes:
    time: datetime
    new_bytes: int
    stored_bytes: int


def _x(time: datetime, start: datetime, end: datetime) -> float:
    span = (end - start).total_seconds() or 1.0
    return LEFT + (WIDTH - LEFT - RIGHT) * (time - start).total_seconds() / span


def _time_axis(start: datetime, end: datetime) -> list[str]:
    """Up to six date labels under the plot."""
    parts = [f'<line class="axis" x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH - RIGHT}" '
             f'y2="{HEIGHT - BOTTOM}"/>']
    ticks = 5
    label = "%b %d" if end - start > timedelta(days=3) else "%d %H:%M"
    for step in range(ticks + 1):
        time = start + (end - start) * step / ticks
        x = _x(time, start, end)
        anchor = "start" if step == 0 else "end" if step == ticks else "middle"
        parts.append(f'<text class="tick" x="{x:.1f}" y="{HEIGHT - 8}" text-anchor="{anchor}">'
                     f'{time:{label}}</text>')
    return parts


def _svg(title: str, parts: list[str]) -> str:
    return (f'<svg class="plot" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
            f'><title>{escape(title)}</title>'
            + "".join(parts) + "</svg>")


def _padded(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    pad = max((end - start) * 0.03, timedelta(hours=6))
    return start - pad, end + pad


def timeline_svg(title: str, marks: Sequence[Mark], now: datetime) -> str:
    """Snapshots as green dots on one line, failed runs as red crosses on another."""
    if not marks:
        return _svg(title, [f'<text class="empty" x="{WIDTH / 2}" y="{HEIGHT / 2}" '
                            f'text-anchor="middle">nothing yet</text>'])
    start, end = _padded(min(m.time for m in marks), max(max(m.time for m in marks), now))
    good_y, bad_y = TOP + 30, TOP + 78
    parts = [f'<text class="lane" x="{LEFT - 8}" y="{good_y + 4}" text-anchor="end">'
             f'snapshot</text>',
             f'<text class="lane" x="{LEFT - 8}" y="{bad_y + 4}" text-anchor="end">failed</text>',
             f'<line class="lane-line" x1="{LEFT}" y1="{good_y}" x2="{WIDTH - RIGHT}" '
             f'y2="{good_y}"/>',
             f'<line class="lane-line" x1="{LEFT}" y1="{bad_y}" x2="{WIDTH - RIGHT}" '
             f'y2="{bad_y}"/>']
    for mark in marks:
        x = _x(mark.time, start, end)
        tip = f"<title>{escape(mark.label)}</title>"
        if mark.good:
            parts.append(f'<circle class="good" cx="{x:.1f}" cy="{good_y}" r="5">{tip}</circle>')
        else:
            parts.append(f'<path class="bad" d="M{x - 5:.1f},{bad_y - 5} l10,10 m0,-10 l-10,10">'
                         f'{tip}</path>')
    now_x = _x(now, start, end)
    parts.append(f'<line class="now" x1="{now_x:.1f}" y1="{TOP}" x2="{now_x:.1f}" '
                 f'y2="{HEIGHT - BOTTOM}"/>')
    return _svg(title, parts + _time_axis(start, end))


def bytes_svg(title: str, nights: Sequence[NightBytes], format_bytes: FormatBytes) -> str:
    """Per snapshot, a pair of bars: new data found (light) and bytes stored for it (dark)."""
    if not nights:
        return _svg(title, [f'<text class="empty" x="{WIDTH / 2}" y="{HEIGHT / 2}" '
                            f'text-anchor="middle">nothing yet</text>'])
    heights = [max(n.new_bytes, n.stored_bytes) for n in nights]
    top = max(heights) or 1
    if len(nights) > 2 and heights[0] > FIRST_BAR_CLIP * max(heights[1:]):
        # The first backup stores the whole image: scaled to it, every later night is a
        # flat line. Scale to the later nights and cut the first bar, saying so.
        top = max(heights[1:]) or 1
    plot_height = HEIGHT - TOP - BOTTOM
    slot = (WIDTH - LEFT - RIGHT) / len(nights)
    bar = max(1.0, min(14.0, slot * 0.4))
    parts = [f'<text class="tick" x="{LEFT - 8}" y="{TOP + 4}" text-anchor="end">'
             f'{format_bytes(top)}</text>',
             f'<text class="tick" x="{LEFT - 8}" y="{HEIGHT - BOTTOM}" text-anchor="end">0</text>',
             f'<line class="grid" x1="{LEFT}" y1="{TOP}" x2="{WIDTH - RIGHT}" y2="{TOP}"/>',
             f'<line class="axis" x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH - RIGHT}" '
             f'y2="{HEIGHT - BOTTOM}"/>']
    for index, night in enumerate(nights):
        middle = LEFT + slot * (index + 0.5)
        for offset, value, kind in ((-bar, night.new_bytes, "new"),
                                    (0.0, night.stored_bytes, "stored")):
            height = plot_height * min(value, top) / top
            parts.append(f'<rect class="{kind}" x="{middle + offset:.1f}" '
                         f'y="{HEIGHT - BOTTOM - height:.1f}" width="{bar:.1f}" '
                         f'height="{height:.1f}"><title>{night.time:%Y-%m-%d %H:%M}: '
                         f'{format_bytes(value)} {kind}</title></rect>')
    if heights[0] > top:
        parts.append(f'<text class="tick" x="{LEFT + slot * 0.5 + bar + 6:.1f}" y="{TOP + 10}" '
                     f'text-anchor="start">first: {format_bytes(heights[0])} (cut)</text>')
    label = "%b %d" if nights[-1].time - nights[0].time > timedelta(days=3) else "%d %H:%M"
    labels = sorted({0, len(nights) // 2, len(nights) - 1})
    for index in labels:
        parts.append(f'<text class="tick" x="{LEFT + slot * (index + 0.5):.1f}" '
                     f'y="{HEIGHT - 8}" text-anchor="middle">'
                     f'{nights[index].time:{label}}</text>')
    return _svg(title, parts)
