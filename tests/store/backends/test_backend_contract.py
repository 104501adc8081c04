"""The contract every Backend keeps, run against each backend in backends.BACKENDS: puts are
whole or nothing (even under SIGKILL), put_if_absent is exclusive across processes, range
reads stop at the end, listing goes by prefix and never shows unfinished puts, delete is
idempotent, stat tells present from absent. The local backend also never follows a link
planted in the repository."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from diskvault.store.backends.local import LocalBackend

from ..backend_fixtures import BACKENDS, FIXTURES, open_backend

ROOT = Path(__file__).resolve().parents[3]
DEADLINE_S = 60.0
POLL_S = 0.001
MiB = 1024 * 1024


@pytest.fixture(params=sorted(BACKENDS))
def store(request, tmp_path: Path):
    """(backend, kind, location): an empty store, and how another process opens it."""
    if request.param in FIXTURES:
        request.getfixturevalue(FIXTURES[request.param])
    location = str(tmp_path / "store")
    backend = open_backend(request.param, location)
    yield backend, request.param, location
    backend.close()


@pytest.fixture
def backend(store):
    return store[0]


def child(kind: str, location: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.store.backend_child", kind, location,
                             *args], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)


def wait_for(condition, what: str):
    deadline = time.monotonic() + DEADLINE_S
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(POLL_S)
    return result


def kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stdin.close()
    process.stdout.close()


def far_side_settled(request, kind: str) -> None:
    """Over SSH, a request that reached the server before its client was killed is still
    carried out there (whole): wait until only the test's own server runs."""
    if kind == "ssh":
        server = request.getfixturevalue("ssh_server")
        wait_for(lambda: server.servers_running() <= 1, "the killed client's server to end")


# -- whole or nothing --------------------------------------------------------------------

def test_a_put_killed_midway_leaves_the_old_object_whole_and_nothing_partial(store, request):
    backend, kind, location = store
    size = 32 * MiB
    writer = child(kind, location, "put-forever", "packs/ab/big.pack", str(size))
    try:
        wait_for(lambda: backend.stat("packs/ab/big.pack") is not None, "a first whole put")
        wait_for(lambda: backend.list_unfinished("packs/"), "a put under way")
    finally:
        kill(writer)
    far_side_settled(request, kind)
    data = backend.get("packs/ab/big.pack")
    assert len(data) == size and data == data[:1] * size
    assert backend.list("") == ["packs/ab/big.pack"]
    backend.discard_unfinished("packs/")
    assert backend.list_unfinished("") == []
    assert backend.get("packs/ab/big.pack") == data


def test_an_upload_killed_before_it_completes_is_never_visible(store, request):
    backend, kind, location = store
    writer = child(kind, location, "upload-and-wait", "packs/cd/cut.pack", str(8 * MiB))
    try:
        assert writer.stdout.readline().strip() == "ready"
    finally:
        kill(writer)
    far_side_settled(request, kind)
    assert backend.stat("packs/cd/cut.pack") is None
    assert backend.list("") == []
    with pytest.raises(FileNotFoundError):
        backend.get("packs/cd/cut.pack")
    # A dead process leaves its temp file; an SSH server aborts what its client left open.
    assert bool(backend.list_unfinished("packs/")) == (kind != "ssh")
    backend.discard_unfinished("packs/")
    assert backend.list_unfinished("") == []


def test_a_completed_upload_is_the_whole_object_and_an_aborted_one_leaves_nothing(backend):
    upload = backend.open_upload("packs/ef/whole.pack")
    for part in range(4):
        upload.write(bytes([part]) * 1000)
    assert backend.stat("packs/ef/whole.pack") is None
    upload.complete()
    assert backend.get("packs/ef/whole.pack") == b"".join(bytes([p]) * 1000 for p in range(4))

    dropped = backend.open_upload("packs/ef/dropped.pack")
    dropped.write(b"x" * 1000)
    dropped.abort()
    dropped.abort()
    assert backend.list("packs/") == ["packs/ef/whole.pack"]
    assert backend.list_unfinished("") == []


def test_a_put_replaces_an_object_whole(backend):
    backend.put("config", b"first version, longer than the second")
    backend.put("config", b"second")
    assert backend.get("config") == b"second"
    assert backend.stat("config") == len(b"second")


# -- put if absent -----------------------------------------------------------------------

def test_put_if_absent_is_exclusive_across_racing_processes(store):
    backend, kind, location = store
    racers = [child(kind, location, "race", "lock", f"racer-{n}") for n in range(8)]
    try:
        for racer in racers:
            assert racer.stdout.readline().strip() == "ready"
        for racer in racers:
            racer.stdin.write("go\n")
            racer.stdin.flush()
        outcomes = [racer.stdout.readline().strip() for racer in racers]
    finally:
        for racer in racers:
            kill(racer)
    assert sorted(outcomes) == ["lost"] * 7 + ["won"]
    assert backend.get("lock") == f"racer-{outcomes.index('won')}".encode()
    assert backend.list_unfinished("") == []


def test_put_if_absent_keeps_an_existing_object_and_recycles_the_spare(backend):
    assert backend.put_if_absent("lock", b"mine") is True
    assert backend.put_if_absent("lock", b"theirs") is False
    assert backend.get("lock") == b"mine"

    backend.move("lock", "lock.spare")
    assert backend.put_if_absent("lock", b"next holder", reuse="lock.spare") is True
    assert backend.get("lock") == b"next holder"
    assert backend.stat("lock.spare") is None
    assert backend.list("") == ["lock"]


# -- reading -----------------------------------------------------------------------------

def test_range_reads_at_and_past_the_end_return_what_there_is(backend):
    data = bytes(range(100))
    backend.put("packs/01/p.pack", data)
    assert backend.get_range("packs/01/p.pack", 10, 5) == data[10:15]
    assert backend.get_range("packs/01/p.pack", 90, 20) == data[90:]
    assert backend.get_range("packs/01/p.pack", 100, 5) == b""
    assert backend.get_range("packs/01/p.pack", 250, 5) == b""
    assert backend.get("packs/01/p.pack") == data


def test_reading_an_absent_object_is_file_not_found(backend):
    with pytest.raises(FileNotFoundError):
        backend.get("snapshots/none.json")
    with pytest.raises(FileNotFoundError):
        backend.get_range("packs/00/none.pack", 0, 10)


def test_stat_tells_present_from_absent_and_a_prefix_is_not_an_object(backend):
    backend.put("a/b/c/deep.json", b"12345")
    assert backend.stat("a/b/c/deep.json") == 5
    assert backend.stat("a/b/c/other.json") is None
    assert backend.stat("a/b") is None
    assert backend.stat("a/b/c/deep.json/below") is None


# -- listing and deleting ----------------------------------------------------------------

def test_age_of_a_fresh_object_is_small_and_leaves_nothing_behind(backend):
    """By the storage's clock (an S3 Date is whole seconds: at most one second off)."""
    assert backend.age("readers/x.json") is None
    backend.put("readers/x.json", b"lease")
    age = backend.age("readers/x.json")
    assert 0.0 <= age.age_s < 30.0 and abs(age.host_ahead_s) < 30.0
    assert backend.list("") == ["readers/x.json"]
    assert backend.list_unfinished("") == []


def test_listing_goes_by_prefix_sorted_over_nested_names(backend):
    names = ["config", "packs/ab/2.pack", "packs/ab/1.pack", "packs/ac/3.pack",
             "snapshots/x.json", "a/b/c/d/e.json"]
    for name in names:
        backend.put(name, name.encode())
    assert backend.list("") == sorted(names)
    assert backend.list("packs/") == ["packs/ab/1.pack", "packs/ab/2.pack", "packs/ac/3.pack"]
    assert backend.list("packs/ab/") == ["packs/ab/1.pack", "packs/ab/2.pack"]
    assert backend.list("packs/a") == backend.list("packs/")
    assert backend.list("pack") == backend.list("packs/")
    assert backend.list("a/b/") == ["a/b/c/d/e.json"]
    assert backend.list("nothing/") == []
    assert all(backend.get(name) == name.encode() for name in names)


def test_delete_is_idempotent_and_the_name_is_free_again(backend):
    backend.put("readers/me.json", b"x")
    backend.delete("readers/me.json")
    backend.delete("readers/me.json")
    backend.delete("never/was.json")
    assert backend.stat("readers/me.json") is None
    assert backend.list("readers/") == []
    assert backend.put_if_absent("readers/me.json", b"again") is True


def test_move_renames_replacing_the_target_and_a_missing_source_is_file_not_found(backend):
    backend.put("packs/aa/x.pack", b"damaged")
    backend.put("damaged/x.pack", b"older")
    backend.move("packs/aa/x.pack", "damaged/x.pack")
    assert backend.get("damaged/x.pack") == b"damaged"
    assert backend.list("packs/") == []
    with pytest.raises(FileNotFoundError):
        backend.move("packs/aa/x.pack", "damaged/x.pack")


@pytest.mark.parametrize("name", ["", "/config", "a//b", "../outside", "packs/../config",
                                  "packs/."])
def test_names_that_could_leave_the_store_are_refused(backend, name):
    with pytest.raises(ValueError):
        backend.put(name, b"x")


# -- what the backend answers about its place --------------------------------------------

REPOSITORY_ID = "0123456789abcdef0123456789abcdef"


def test_the_index_lives_in_the_repository_folder_or_in_a_private_cache(backend, tmp_path,
                                                                          monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = backend.index_folder(REPOSITORY_ID)
    if backend.index_is_cache:
        assert tmp_path / "cache" in folder.parents and backend.root is None
        assert folder.parent.stat().st_mode & 0o777 == 0o700
        assert backend.index_folder(REPOSITORY_ID) == folder  # made once, found again
    else:
        assert folder.parent == backend.root


def test_disk_folders_are_the_repository_folder_first_or_none(backend):
    folders = backend.disk_folders()
    assert (folders[0] == backend.root) if folders else backend.root is None


def test_a_path_is_inside_only_under_the_repository_folder_however_it_is_reached(
        backend, tmp_path):
    assert not backend.contains(tmp_path / "elsewhere" / "image.img")
    if backend.root is None:
        return
    link = tmp_path / "link"
    link.symlink_to(backend.root)
    assert backend.contains(backend.root / "packs" / "new.img")
    assert backend.contains(link / "new.img")
    assert backend.contains(backend.root)


def test_requests_are_counted_where_they_cost_and_workers_fit_the_storage(backend):
    before = backend.requests_made()
    backend.put("config", b"x")
    after = backend.requests_made()
    assert (before is None) == (after is None) == (backend.root is not None)
    if after is not None:
        assert sum(after.values()) > sum(before.values())
    assert backend.reads_in_flight is None or backend.reads_in_flight > 1
    # a random reader's windows are worth their bytes only where requests are counted
    assert (backend.read_window_bytes > 0) == (after is not None)


# -- the local backend never follows a link ------------------------------------------------

VICTIM_BYTES = b"not diskvault's, must stay as it is\n"


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim"
    path.write_bytes(VICTIM_BYTES)
    return path


def test_local_backend_never_follows_a_link_planted_as_an_object(tmp_path: Path, victim):
    root = tmp_path / "repo"
    (root / "snapshots").mkdir(parents=True)
    link = root / "snapshots" / "planted.json"
    link.symlink_to(victim)
    backend = LocalBackend(root)

    with pytest.raises(OSError):
        backend.get("snapshots/planted.json")
    with pytest.raises(OSError):
        backend.get_range("snapshots/planted.json", 0, 10)
    assert backend.stat("snapshots/planted.json") is None
    assert backend.list("") == []
    assert backend.list_foreign("snapshots/") == ["snapshots/planted.json"]
    assert backend.put_if_absent("snapshots/planted.json", b"x") is False
    backend.put("snapshots/planted.json", b"replaces the link itself")
    assert not link.is_symlink() and link.read_bytes() == b"replaces the link itself"
    assert victim.read_bytes() == VICTIM_BYTES


def test_local_backend_never_follows_a_link_planted_as_a_folder(tmp_path: Path):
    root, elsewhere = tmp_path / "repo", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    (elsewhere / "ab").mkdir()
    (elsewhere / "ab" / "kept.pack").write_bytes(VICTIM_BYTES)
    (root / "packs").symlink_to(elsewhere)
    backend = LocalBackend(root)

    with pytest.raises(OSError):
        backend.put("packs/ab/new.pack", b"x")
    with pytest.raises(OSError):
        backend.get("packs/ab/kept.pack")
    with pytest.raises(OSError):
        backend.delete("packs/ab/kept.pack")
    assert backend.list("packs/") == []
    assert backend.list_foreign("") == ["packs"]
    assert sorted(os.listdir(elsewhere / "ab")) == ["kept.pack"]
    assert (elsewhere / "ab" / "kept.pack").read_bytes() == VICTIM_BYTES


def test_local_reads_from_many_threads_through_a_tiny_descriptor_cache_get_their_own_bytes(
        tmp_path: Path):
    """Evicting a descriptor while another thread reads through it must not close it under
    that read, or the number may be reused for another object and the read return its bytes."""
    backend = LocalBackend(tmp_path, open_files=2)
    names = [f"packs/0{n}/object{n}" for n in range(8)]
    for number, name in enumerate(names):
        backend.put(name, bytes([number]) * 65536)
    wrong = []

    def read_many(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(400):
            number = rng.randrange(len(names))
            data = backend.get_range(names[number], rng.randrange(65000), 512)
            if data != bytes([number]) * len(data) or not data:
                wrong.append((names[number], data[:8]))

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(read_many, range(4)))
    backend.close()
    assert wrong == []
