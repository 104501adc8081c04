"""Small concurrency helpers for the hot paths: read-ahead and ordered parallel map."""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from itertools import islice
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

_DONE = object()


def worker_count() -> int:
    return max(2, os.cpu_count() or 2)


def new_pool(name: str, workers: int | None = None) -> ThreadPoolExecutor:
    """Threads for work that releases the GIL (blake3, zstd, pread): ``workers`` of them,
    or one per core."""
    return ThreadPoolExecutor(max_workers=workers or worker_count(), thread_name_prefix=name)


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Produce ``items`` in a background thread, ``depth`` ahead of the consumer.

    Used to overlap reading the source with chunking it. Errors are re-raised in the
    consumer; a consumer that stops early stops the producer.
    """
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        slots.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put((_DONE, None))
        except BaseException as error:  # handed to the consumer, re-raised there
            slots.put((_DONE, error))

    thread = threading.Thread(target=produce, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = slots.get()
            if item is _DONE:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                slots.get_nowait()
            except queue.Empty:
                thread.join(0.05)


def ordered_map(pool: Executor, function: Callable[[T], R], items: Iterable[T],
                window: int) -> Iterator[tuple[T, R]]:
    """Apply ``function`` to ``items`` on ``pool`` with at most ``window`` in flight;
    results come back in input order, so writes stay sequential while work overlaps."""
    in_flight: deque = deque()
    try:
        for item in items:
            in_flight.append((item, pool.submit(function, item)))
            if len(in_flight) >= window:
                head, future = in_flight.popleft()
                yield head, future.result()
        while in_flight:
            head, future = in_flight.popleft()
            yield head, future.result()
    finally:
        for _, future in in_flight:
            future.cancel()


def batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of ``size`` items (the last one shorter)."""
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch
