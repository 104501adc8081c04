"""Would chunking a full read on both cores pay? Measured before anything is built.

    .venv/bin/python -m benchmarks.parallel_chunking [--size 1G] [--repeat 2]

The compiled FastCDC (fastcdc.fastcdc_cy) holds the GIL (two threads cut no faster than
one: the first row), so parallel chunking would need processes. This measures, in one run:

- the plain read baseline: ``cat`` of the image to /dev/null from the page cache;
- a first backup and a full-read nightly (night 1 rewrites 1 % of the 4 KiB blocks at random;
  no change map, so every byte is read, hinted by night 0), plaintext and encrypted
  (format version 3, keyed chunker), best of ``--repeat``;
- how many of each backup's seconds the one core spent inside the chunker (FastCDC and, keyed,
  the translation) in an instrumented run: the most that spreading the chunking could save;
- cutting the whole image in segments by a pool of one process against a pool of two (each
  worker reads a 64 MiB segment at its file offset and cuts it, a little past its end; the
  segments are joined where their cut points coincide, checked equal to the cuts of
  diskvault's chunker in one pass), with the pool's start-up apart.

The result is printed and written to benchmarks/results/parallel-chunking/report.md with
the load average before and after.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

from diskvault.store.backup import chunker as chunker_module
from diskvault.store.backup.chunker import Chunker, piece_length
from diskvault.store.format.config import PLAINTEXT_MODE, REPOKEY_MODE, ChunkerParams
from diskvault.store.format.crypto import Keys, chunker_permutation

from .change_map import rewrite_blocks
from .micro import READ_BYTES, make_image, new_repository, parse_size

RESULTS = Path(__file__).parent / "results" / "parallel-chunking" / "report.md"
SEGMENT_BYTES = 64 << 20
OVERLAP_BYTES = 4 << 20     # a segment is cut this far past its end, to meet the next one
CHANGED_PERCENT = 1.0
CHANGED_BLOCK_BYTES = 4096
GIL_REPEAT = 5  # the cheapest row, and the noisiest on a shared machine
MODES = {"plaintext": PLAINTEXT_MODE, "encrypted (keyed chunker)": REPOKEY_MODE}


def seconds_of(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


# -- the GIL question -------------------------------------------------------------------
def cut_count(view, params: ChunkerParams) -> int:
    return sum(1 for _ in chunker_module._fastcdc(view, params.min_bytes, params.avg_bytes,
                                                   params.max_bytes))


def threads_against_one(data: bytes, params: ChunkerParams, repeat: int) -> tuple[float, float]:
    """Best seconds to cut ``data`` on one thread, and its two halves on two threads at
    once (the compiled chunker's source has no ``nogil`` section: expect no gain)."""
    view = memoryview(data)
    half = len(data) // 2

    def both() -> None:
        threads = [threading.Thread(target=cut_count, args=(part, params))
                   for part in (view[:half], view[half:])]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    one = min(seconds_of(lambda: cut_count(view, params)) for _ in range(repeat))
    return one, min(seconds_of(both) for _ in range(repeat))


# -- segments cut by processes, joined -------------------------------------------------
def segment_cuts(path: str, start: int, stop: int, params: ChunkerParams,
                 permutation: bytes | None) -> list[int]:
    """Cut points (absolute offsets) of chunking from ``start``, past ``stop`` by the
    overlap; the end of the data read is a cut only at the end of the file."""
    with open(path, "rb") as handle:
        window = os.pread(handle.fileno(), stop + OVERLAP_BYTES - start, start)
        at_file_end = start + len(window) == os.fstat(handle.fileno()).st_size
    if permutation is not None:
        window = window.translate(permutation)
    cuts, position = [], start
    for chunk in chunker_module._fastcdc(window, params.min_bytes, params.avg_bytes,
                                         params.max_bytes):
        position += chunk.length
        cuts.append(position)
    return cuts if at_file_end else cuts[:-1]


def join(segments: list[tuple[int, list[int]]]) -> list[int]:
    """The cuts of one sequential pass: each segment's cuts take over from the first cut
    the cuts so far share with them (from there on both chunkers start every chunk at the
    same place, so they cut alike)."""
    cuts = list(segments[0][1])
    for start, later in segments[1:]:
        theirs = set(later) | {start}
        shared = next((i for i, cut in enumerate(cuts) if cut >= start and cut in theirs), None)
        if shared is None:
            raise RuntimeError(f"segment at {start} did not fall in step within the overlap")
        meeting = cuts[shared]
        cuts = cuts[: shared + 1] + [cut for cut in later if cut > meeting]
    return cuts


def cut_in_segments(pool: ProcessPoolExecutor, path: Path, size: int,
                    params: ChunkerParams, permutation: bytes | None) -> list[int]:
    starts = list(range(0, size, SEGMENT_BYTES))
    futures = [pool.submit(segment_cuts, str(path), start, min(size, start + SEGMENT_BYTES),
                           params, permutation) for start in starts]
    return join([(start, future.result()) for start, future in zip(starts, futures)])


def sequential_cuts(path: Path, params: ChunkerParams, permutation: bytes | None) -> list[int]:
    """The cuts diskvault's own chunker makes, streaming the file in one pass."""
    chunker = Chunker(params, permutation=permutation)
    cuts, position = [], 0
    with open(path, "rb") as handle:
        pieces = [piece for buffer in iter(lambda: handle.read(READ_BYTES), b"")
                  for piece in chunker.feed(buffer)]
    for piece in pieces + chunker.finish():
        position += piece_length(piece)
        cuts.append(position)
    return cuts


# -- how long a backup spends in the chunker -------------------------------------------
class ChunkerClock:
    """While installed, adds up the CPU seconds the calling thread spends in FastCDC and
    the keyed translation."""

    def __init__(self):
        self.seconds = 0.0
        self._cut, self._cuttable = chunker_module._fastcdc, chunker_module.Chunker._cuttable

    def __enter__(self) -> "ChunkerClock":
        clock, cut, cuttable = self, self._cut, self._cuttable

        def timed_cut(*args):
            chunks = cut(*args)
            while True:
                started = time.thread_time()
                chunk = next(chunks, None)
                clock.seconds += time.thread_time() - started
                if chunk is None:
                    return
                yield chunk

        def timed_cuttable(chunker, window):
            started = time.thread_time()
            result = cuttable(chunker, window)
            clock.seconds += time.thread_time() - started
            return result

        chunker_module._fastcdc = timed_cut
        chunker_module.Chunker._cuttable = timed_cuttable
        return self

    def __exit__(self, *_) -> None:
        chunker_module._fastcdc = self._cut
        chunker_module.Chunker._cuttable = self._cuttable


def backups(image: Path, night: Path, work: Path, mode: str, repeat: int) -> dict:
    """Best seconds of a first backup and of a full-read nightly, and the chunker's
    seconds in an instrumented run of each."""
    best = {"first": float("inf"), "nightly": float("inf")}
    in_chunker = {}
    for round_ in range(repeat + 1):
        instrumented = round_ == repeat
        root = Path(tempfile.mkdtemp(dir=work)) / "repo"
        with new_repository(root, mode, "bench", kdf_for_tests=True) as repository:
            for label, path in (("first", image), ("nightly", night)):
                if instrumented:
                    with ChunkerClock() as clock:
                        repository.backup(path, name="vm")
                    in_chunker[label] = clock.seconds
                else:
                    best[label] = min(best[label],
                                      seconds_of(lambda p=path: repository.backup(p, name="vm")))
        shutil.rmtree(root.parent)
    return {label: (best[label], in_chunker[label]) for label in best}


def run(size: int, repeat: int, work: Path) -> dict:
    image, night = work / "night0.img", work / "night1.img"
    make_image(image, size)
    shutil.copyfile(image, night)
    rewrite_blocks(night, size, CHANGED_PERCENT, block_bytes=CHANGED_BLOCK_BYTES)
    params = ChunkerParams()
    permutation = chunker_permutation(Keys.generate())
    cat = min(seconds_of(lambda: subprocess.run(["cat", str(night)], stdout=subprocess.DEVNULL,
                                                check=True)) for _ in range(repeat))
    sample = image.read_bytes()[: 256 << 20]
    gil = threads_against_one(sample, params, max(repeat, GIL_REPEAT))
    results = {"cat": cat, "gil": (len(sample), *gil), "backups": {}, "cutting": {}}
    for name, mode in MODES.items():
        results["backups"][name] = backups(image, night, work, mode, repeat)
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(1, mp_context=context) as one_pool, \
            ProcessPoolExecutor(2, mp_context=context) as two_pool:
        list(one_pool.map(abs, range(1)))
        started = time.perf_counter()
        list(two_pool.map(abs, range(2)))  # both workers up
        results["pool_start"] = time.perf_counter() - started
        for name, keyed in (("plaintext", None), ("encrypted (keyed chunker)", permutation)):
            expected = sequential_cuts(night, params, keyed)
            for pool in (one_pool, two_pool):
                assert cut_in_segments(pool, night, size, params, keyed) == expected
            one, two = (min(seconds_of(lambda p=pool: cut_in_segments(p, night, size, params,
                                                                      keyed))
                            for _ in range(repeat)) for pool in (one_pool, two_pool))
            results["cutting"][name] = (one, two)
    return results


def report(results: dict, size: int, repeat: int, load_before, load_after) -> str:
    cat = results["cat"]
    sample, one_thread, two_threads = results["gil"]

    def rate(seconds: float) -> str:
        return f"{size / seconds / 1e6:.0f}"
    lines = [
        "# Parallel chunking of a full read: does it pay on 2 cores?",
        "",
        f"`python -m benchmarks.parallel_chunking --size {size >> 20}M --repeat {repeat}`, "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, load average "
        f"{load_before[0]:.1f} before and {load_after[0]:.1f} after (2 cores, shared). "
        f"Image: micro.mixed_pieces, {size >> 20} MiB; the nightly rewrites "
        f"{CHANGED_PERCENT:g} % of its {CHANGED_BLOCK_BYTES >> 10} KiB blocks at random and is "
        f"read in full (hints from night 0, no change map). Best of {repeat}.",
        "",
        f"Baseline: `cat` of the image from the page cache, {cat:.2f} s ({rate(cat)} MB/s).",
        "",
        f"The GIL: cutting {sample >> 20} MiB on one thread {one_thread:.3f} s, its two halves "
        f"on two threads at once {two_threads:.3f} s ({one_thread / two_threads:.2f}x).",
        "",
        "| backup | s | MB/s | vs cat | s in the chunker (1 core) | share | "
        "at best, chunking halved |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, runs in results["backups"].items():
        for label, (seconds, chunking) in runs.items():
            what = "first backup" if label == "first" else "full-read nightly"
            bound = seconds - chunking / 2
            lines.append(
                f"| {what}, {mode} | {seconds:.2f} | {rate(seconds)} | {cat / seconds:.2f}x | "
                f"{chunking:.2f} | {chunking / seconds:.0%} | {bound:.2f} s "
                f"({seconds / bound:.2f}x) |")
    lines += [
        "",
        f"Cutting the whole image alone (no hashing, no storing), in {SEGMENT_BYTES >> 20} MiB "
        f"segments read with pread, joined where their cuts coincide (checked equal to the "
        f"cuts of diskvault's chunker in one pass): a pool of one process against a pool of "
        f"two. The pool's start-up (forkserver, both workers up) took "
        f"{results['pool_start']:.2f} s apart.",
        "",
        "| cutting | one process s | two processes s | speed-up |",
        "|---|---|---|---|",
    ]
    for mode, (one, two) in results["cutting"].items():
        lines.append(f"| {mode} | {one:.2f} | {two:.2f} | {one / two:.2f}x |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1G", help="image size (default 1G)")
    parser.add_argument("--repeat", type=int, default=2, help="best of N (default 2)")
    args = parser.parse_args()
    size = parse_size(args.size)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="diskvault-parallel-chunking-",
                                     dir="/var/tmp") as work:
        results = run(size, args.repeat, Path(work))
    text = report(results, size, args.repeat, load_before, os.getloadavg())
    print(text, end="")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
