"""AES-256-GCM against ChaCha20-Poly1305 (the `cryptography` package), beside blake3 and zstd.

    .venv/bin/python -m benchmarks.crypto_bench [--total 64M] [--repeat 3]

Every figure is MB/s of message bytes (best of ``--repeat``), for 64 KiB messages (our average
chunk) and 1 MiB messages, on one thread and on two threads each working through half of
the same messages. On a shared machine the two-thread column is noisy, so a direct probe
answers the GIL question: one call runs in a worker thread while the main thread spins, and
the main thread's CPU time over the worker's is printed (median of ``--repeat``) — about 1
if the call releases the GIL, like the pure-Python reference row if it holds it. blake3 and zstd
level 3 of the same data in the same run are the yardsticks: they are the per-chunk work a
backup already does, so encryption's share of the hot path reads off the ratios.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import blake3
import zstandard
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from .micro import best_seconds, mixed_pieces

MESSAGE_SIZES = (64 * 1024, 1024 * 1024)


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1].upper()] if text[-1].upper() in units else int(text)


def aead_work(cipher_class: type) -> Callable[[list[memoryview]], None]:
    cipher = cipher_class(os.urandom(32))

    def run(messages: list[memoryview]) -> None:
        for message in messages:
            cipher.encrypt(os.urandom(12), message, b"associated data")
    return run


def blake3_work(messages: list[memoryview]) -> None:
    for message in messages:
        blake3.blake3(message).digest()


def zstd_work(messages: list[memoryview]) -> None:
    compressor = zstandard.ZstdCompressor(level=3)  # one per thread, as the chunk writer does
    for message in messages:
        compressor.compress(message)


def throughput(work: Callable[[list[memoryview]], None], messages: list[memoryview],
               threads: int, repeat: int) -> float:
    total = sum(len(message) for message in messages)
    if threads == 1:
        seconds = best_seconds(lambda: work(messages), repeat)
    else:
        shares = [messages[index::threads] for index in range(threads)]
        with ThreadPoolExecutor(threads) as pool:
            seconds = best_seconds(lambda: list(pool.map(work, shares)), repeat)
    return total / seconds / 1e6


def gil_share(work: Callable[[list[memoryview]], None], message: memoryview) -> float:
    """CPU time a spinning main thread gets while ``work`` runs one call in another thread,
    over that thread's CPU time: about 1 when the call releases the GIL, well below 1 when
    it holds it (the pure-Python reference row shows where "holds" lands on this machine)."""
    finished = threading.Event()
    worker_seconds: list[float] = []

    def run() -> None:
        started = time.thread_time()
        work([message])
        worker_seconds.append(time.thread_time() - started)
        finished.set()

    worker = threading.Thread(target=run)
    main_started = time.thread_time()
    worker.start()
    while not finished.is_set():
        pass
    main_seconds = time.thread_time() - main_started
    worker.join()
    return main_seconds / worker_seconds[0]


def pure_python_work(messages: list[memoryview]) -> None:
    """Holds the GIL throughout: the reference for the probe."""
    for message in messages:
        sum(range(len(message) // 20))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total", default="64M", help="bytes per measurement (default 64M)")
    parser.add_argument("--repeat", type=int, default=3)
    arguments = parser.parse_args()
    total = parse_size(arguments.total)
    data = memoryview(b"".join(mixed_pieces(total)))
    works = {
        "AES-256-GCM": aead_work(AESGCM),
        "ChaCha20-Poly1305": aead_work(ChaCha20Poly1305),
        "blake3": blake3_work,
        "zstd level 3": zstd_work,
    }
    print(f"{total >> 20} MiB per measurement, best of {arguments.repeat}, "
          f"{os.cpu_count()} cores (shared machine: compare ratios within this run)")
    print(f"{'':20} {'msg':>6} {'1 thread':>10} {'2 threads':>10} {'2t/1t':>6}")
    for message_size in MESSAGE_SIZES:
        messages = [data[offset:offset + message_size] for offset in range(0, total, message_size)]
        for name, work in works.items():
            one = throughput(work, messages, 1, arguments.repeat)
            two = throughput(work, messages, 2, arguments.repeat)
            print(f"{name:20} {message_size >> 10:5}K {one:8.0f}MB/s {two:8.0f}MB/s "
                  f"{two / one:6.2f}")
    print("GIL probe: CPU of a spinning thread / CPU of one 16 MiB call (~1 = GIL released)")
    for name, work in {**works, "pure Python (holds)": pure_python_work}.items():
        shares = sorted(gil_share(work, data[:16 << 20]) for _ in range(arguments.repeat))
        print(f"{name:20} {shares[len(shares) // 2]:6.2f}")


if __name__ == "__main__":
    main()
