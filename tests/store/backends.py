"""The backends the contract suite (test_backend_contract.py) runs against, by name. Each
opens the store at a location the test gives (a local folder now; an object-store backend
would take a bucket prefix derived from it). backend_child.py opens the same store in
another process."""

from __future__ import annotations

from pathlib import Path

from diskvault.store.backend import Backend, LocalBackend


def _local(location: str) -> LocalBackend:
    Path(location).mkdir(mode=0o700, exist_ok=True)
    return LocalBackend(Path(location))


BACKENDS = {"local": _local}


def open_backend(kind: str, location: str) -> Backend:
    return BACKENDS[kind](location)
