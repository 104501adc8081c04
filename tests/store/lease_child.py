"""A writer or reader of another host, for test_lock_leases.py: run in a UTS namespace of its
own whose host name differs from the test's (the ``other_host`` fixture), so the lock rules for other
hosts apply to it for real. ``python -m tests.store.lease_child ROLE KIND LOCATION REFRESH_S
STALE_S``.

Roles:
  write  take the writer lock, print "locked", then per line on stdin: "wait-lost" waits
         until the heartbeat finds the lock in other hands, then tries to commit
         (ensure_held) and prints "noticed, lost: <message>" (or "still held",
         "committed"); "release" releases it and prints "released"
  register  the same with a backup's registration (BackupLock) instead of the writer lock
  read   register as a reader, print "reading", and wait on stdin
  take   try once to take the writer lock: print "took" (and release it) or "refused: <message>"
  hold   open the (encrypted) repository there, take its writer lock for "backup /srv/vm7.img"
         and register as a reader, print "locked", and on a line on stdin release both and
         print "released"
  compact, delete  open the (plaintext) repository there, take the writer lock, print
         "locked", and on a line on stdin run a compaction under it (threshold 0), or delete
         every snapshot: print "done", or "lost: <message>" and exit with LockLost's code
"""

from __future__ import annotations

import sys
import time

from diskvault.errors import LockLost, RepositoryLocked
from diskvault.maintenance.compact import compact_holding
from diskvault.maintenance.prune import forget_records
from diskvault.store.coordination.leases import LeaseTiming
from diskvault.store.coordination.locking import BackupLock, WriterLock
from diskvault.store.coordination.readers import ReaderLock
from diskvault.store.repository import Repository

from .backend_fixtures import open_backend, repository_location

DEADLINE_S = 60.0


def wait_until_lost(lock: WriterLock | BackupLock) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while lock.held and time.monotonic() < deadline:
        time.sleep(0.01)
    noticed = "noticed" if not lock.held else "still held"
    try:
        lock.ensure_held()
    except LockLost as error:
        print(f"{noticed}, lost: {error}", flush=True)
    else:
        print(f"{noticed}, committed", flush=True)


def write(lock: WriterLock | BackupLock) -> None:
    lock.acquire()
    print("locked", flush=True)
    for line in sys.stdin:
        if line.strip() == "wait-lost":
            wait_until_lost(lock)
        elif line.strip() == "release":
            lock.release()
            print("released", flush=True)
            return


def compact(storage, lock: WriterLock) -> None:
    compact_holding(storage, lock, threshold=0.0)


def delete(storage, lock: WriterLock) -> None:
    forget_records(storage, storage.snapshots.all().headers, lock)


MAINTENANCE = {"compact": compact, "delete": delete}


def maintain(role: str, location: str, timing: LeaseTiming) -> None:
    with Repository.open(location) as repository, \
            WriterLock(repository.storage.backend, role, timing=timing) as lock:
        print("locked", flush=True)
        sys.stdin.readline()
        try:
            MAINTENANCE[role](repository.storage, lock)
        except LockLost as error:
            print(f"lost: {error}", flush=True)
            raise SystemExit(error.exit_code) from None
        print("done", flush=True)


def hold(location: str, timing: LeaseTiming) -> None:
    with Repository.open(location) as repository, repository.reader_lock(), \
            WriterLock(repository.storage.backend, "backup /srv/vm7.img", timing=timing,
                       leases=repository.storage.leases):
        print("locked", flush=True)
        sys.stdin.readline()
    print("released", flush=True)


def main(role: str, kind: str, location: str, refresh_s: str, stale_s: str) -> None:
    backend = open_backend(kind, location)
    timing = LeaseTiming(float(refresh_s), float(stale_s))
    if role == "write":
        write(WriterLock(backend, "backup /srv/vm7.img", timing=timing))
    elif role == "register":
        write(BackupLock(backend, "backup /srv/vm7.img", timing=timing))
    elif role == "read":
        with ReaderLock(backend, "restore vm7", timing=timing):
            print("reading", flush=True)
            sys.stdin.readline()
    elif role == "take":
        try:
            with WriterLock(backend, "compact", timing=timing):
                print("took", flush=True)
        except RepositoryLocked as error:
            print(f"refused: {error}", flush=True)
    elif role == "hold":
        hold(repository_location(kind, location), timing)
    elif role in MAINTENANCE:
        maintain(role, repository_location(kind, location), timing)
    else:
        raise SystemExit(f"unknown role {role}")


if __name__ == "__main__":
    main(*sys.argv[1:])
