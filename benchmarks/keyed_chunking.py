"""What the keyed chunker costs: chunking, first and nightly backups, keyed against unkeyed,
in one run.

    .venv/bin/python -m benchmarks.keyed_chunking [--size 256M] [--repeat 5]

Encrypted repositories of format version 3 cut with FastCDC over a keyed translation of the
data (docs/encryption.md); those of version 2 cut with FastCDC as published. Each pair is
measured interleaved (keyed, unkeyed, keyed, ...) so that a change in the shared machine's
load hits both alike; best of ``--repeat``. The image is micro.mixed_pieces; the nightly
image rewrites 64 places of 16 KiB (micro.nightly_image). The result is printed and written
to benchmarks/results/keyed-chunker/report.md with the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from diskvault.store.format.config import FORMAT_VERSION, REPOKEY_MODE
from diskvault.store.format.crypto import Keys, chunker_permutation

from .micro import (chunk_pieces, make_image, new_repository, nightly_image, nightly_seconds,
                    parse_size)

RESULTS = Path(__file__).parent / "results" / "keyed-chunker" / "report.md"
VERSIONS = {"keyed (format version 3)": FORMAT_VERSION, "unkeyed (format version 2)": 2}


def seconds_of(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def interleaved_best(functions: dict[str, object], repeat: int) -> dict[str, float]:
    """Best time of each function, run in turn ``repeat`` times."""
    best = {name: float("inf") for name in functions}
    for _ in range(repeat):
        for name, function in functions.items():
            best[name] = min(best[name], function())
    return best


def repository(work: Path, version: int):
    return new_repository(Path(tempfile.mkdtemp(dir=work)) / "repo", REPOKEY_MODE, "bench",
                          kdf_for_tests=True, version=version)


def run(size: int, repeat: int, work: Path) -> list[tuple[str, dict[str, float]]]:
    image, night = work / "image.raw", work / "night.raw"
    make_image(image, size)
    nightly_image(image, night)
    data = image.read_bytes()
    permutation = chunker_permutation(Keys.generate())
    rows = [("chunking, one thread (FastCDC)", interleaved_best({
        "keyed (format version 3)": lambda: seconds_of(lambda: chunk_pieces(data, permutation)),
        "unkeyed (format version 2)": lambda: seconds_of(lambda: chunk_pieces(data)),
    }, repeat))]

    def first_backup(version: int) -> float:
        with repository(work, version) as fresh:
            return seconds_of(lambda: fresh.backup(image, name="first"))

    rows.append(("first backup, encrypted", interleaved_best(
        {name: (lambda v=version: first_backup(v)) for name, version in VERSIONS.items()},
        repeat)))
    repositories = {name: repository(work, version) for name, version in VERSIONS.items()}
    try:
        runs = iter(range(10**6))
        rows.append(("nightly backup, encrypted (64 places changed, hints)", interleaved_best(
            {name: (lambda r=opened: nightly_seconds(r, image, night, f"night-{next(runs)}"))
             for name, opened in repositories.items()}, repeat)))
    finally:
        for opened in repositories.values():
            opened.close()
    return [(label, {name: size / seconds / 1e6 for name, seconds in best.items()})
            for label, best in rows]


def report(rows, size: int, repeat: int, load_before, load_after) -> str:
    keyed, unkeyed = VERSIONS
    lines = [
        "# The keyed chunker's cost",
        "",
        f"`python -m benchmarks.keyed_chunking --size {size >> 20}M --repeat {repeat}`, "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, load average "
        f"{load_before[0]:.1f} before and {load_after[0]:.1f} after (2 cores, shared). MB/s of "
        f"image bytes, best of {repeat}, keyed and unkeyed interleaved.",
        "",
        f"| | {keyed} | {unkeyed} | keyed / unkeyed |",
        "|---|---|---|---|",
    ]
    for label, rates in rows:
        lines.append(f"| {label} | {rates[keyed]:.0f} | {rates[unkeyed]:.0f} | "
                     f"{rates[keyed] / rates[unkeyed]:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="256M", help="image size (default 256M)")
    parser.add_argument("--repeat", type=int, default=5, help="best of N (default 5)")
    args = parser.parse_args()
    size = parse_size(args.size)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="diskvault-keyed-") as work:
        rows = run(size, args.repeat, Path(work))
    text = report(rows, size, args.repeat, load_before, os.getloadavg())
    print(text, end="")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
