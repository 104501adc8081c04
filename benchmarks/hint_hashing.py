"""A full-read nightly's chunking and hashing, its hints hashed ahead (as a backup hashes
them, from when each buffer is read) against hashed when the chunker reaches them (before):
both ways in one run, alternating, on a vm-image night (1 % of 4 KiB blocks rewritten).

    .venv/bin/python -m benchmarks.hint_hashing [--size 1G] [--repeat 5]

Reading (from the page cache), cutting and hashing only: nothing is compressed or stored,
so the figure is the part of a nightly this choice changes. Wall and CPU seconds of each
run; the ratio of the best runs is the figure to keep (the machine is shared).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

from diskvault.store.backup.back_up import hashed_ahead, parallel_hasher
from diskvault.store.backup.chunker import (Chunker, ZeroRun, hash_sequentially,
                                            hints_from_spans, piece_length)
from diskvault.store.backup.source import ImageSource
from diskvault.store.format.config import ChunkerParams
from diskvault.store.format.manifest import Span
from diskvault.store.pipeline import new_pool, prefetch

from .micro import parse_size
from .vm_image import Plan, apply_night, build_night0

HERE = Path(__file__).resolve().parent


def chunked(image: Path, pool, hints=(), ahead: bool = False) -> tuple[list[Span], int]:
    """The image's spans (digests of hinted chunks, None for the rest) and the chunks hashed."""
    hashed = 0

    def hash_many(views: list) -> list[bytes]:
        nonlocal hashed
        hashed += len(views)
        return parallel_hasher(pool)(views)

    def hash_later(views: list):
        nonlocal hashed
        hashed += len(views)
        return pool.submit(hash_sequentially, views)

    chunker = Chunker(ChunkerParams(), hints, hash_many, hash_later=hash_later if ahead else None)
    spans, offset = [], 0
    with ImageSource(image) as source:
        pieces = prefetch(source.pieces())
        for extent, buffer in (hashed_ahead(pieces, chunker) if ahead else pieces):
            out = chunker.feed_zeros(extent.size) if buffer is None else chunker.feed(buffer)
            for piece in out:
                length = piece_length(piece)
                spans.append(Span(offset, length, None if isinstance(piece, ZeroRun)
                                  else piece[1]))
                offset += length
        for piece in chunker.finish():
            spans.append(Span(offset, piece_length(piece), None))
            offset += piece_length(piece)
    return spans, hashed


def with_digests(spans: list[Span], image: Path) -> list[Span]:
    """Spans of a first backup: every data chunk's digest (hashed here, untimed)."""
    out = []
    with open(image, "rb") as handle:
        for span in spans:
            if span.digest is None and span.length:
                data = handle.read(span.length)
                digest = None if not data.strip(b"\0") else hash_sequentially([data])[0]
                out.append(Span(span.offset, span.length, digest))
            else:
                handle.seek(span.length, 1)
                out.append(span)
    return out


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1G", help="image size (default 1G)")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each way (default 5)")
    args = parser.parse_args()
    size = parse_size(args.size)
    work = Path(tempfile.mkdtemp(prefix="hint-hashing-", dir=HERE / "work"
                                 if (HERE / "work").is_dir() else None))
    try:
        plan = Plan(size, 1)
        pull = build_night0(work / "night0.img", plan, work)
        shutil.copyfile(work / "night0.img", work / "night1.img")
        apply_night(work / "night1.img", 1, plan, work, pull)
        pool = new_pool("hash")
        first, _ = chunked(work / "night0.img", pool)
        hints = list(hints_from_spans(with_digests(first, work / "night0.img")))
        runs: dict[str, list[tuple[float, float]]] = {"on demand": [], "ahead": []}
        results = {}
        for _ in range(args.repeat):
            for way in runs:
                started, cpu = time.perf_counter(), cpu_s()
                spans, hashed = chunked(work / "night1.img", pool, hints, way == "ahead")
                runs[way].append((time.perf_counter() - started, cpu_s() - cpu))
                results[way] = ([(s.offset, s.length) for s in spans], hashed)
        assert results["ahead"][0] == results["on demand"][0], "the two ways cut differently"
        print(f"{size >> 20} MiB vm-image night, {len(hints)} hints, best of {args.repeat}")
        for way, timings in runs.items():
            wall, cpu = min(t[0] for t in timings), min(t[1] for t in timings)
            print(f"  hints hashed {way:9}  wall {wall:5.2f} s  cpu {cpu:5.2f} s  "
                  f"{size / wall / 1e6:6.0f} MB/s  chunks hashed {results[way][1]}")
        best = {way: min(t[0] for t in timings) for way, timings in runs.items()}
        print(f"  ahead / on demand (wall): {best['ahead'] / best['on demand']:.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
