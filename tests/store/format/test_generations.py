"""The generation counter on a real folder and a real radosgw: writers that race for the
same n all commit (each put if absent, the loser taking the next), and trimming keeps the
highest; in an encrypted repository what changed is sealed, bound to the name."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from diskvault.errors import AuthenticationFailed
from diskvault.store.format.config import REPOKEY_MODE
from diskvault.store.format.crypto import RecordKind, associated_data
from diskvault.store.format.generations import GENERATIONS_PREFIX, Generations

from ..backend_fixtures import FIXTURES, open_backend


@pytest.fixture(params=["local", "s3"])
def backend(request, tmp_path: Path):
    if request.param in FIXTURES:
        request.getfixturevalue(FIXTURES[request.param])
    store = open_backend(request.param, str(tmp_path / "repo"))
    yield store
    store.close()


def test_two_writers_that_listed_the_same_highest_both_commit(backend):
    first, second = Generations(backend), Generations(backend)
    assert first.highest() == second.highest() == 0
    assert first.add("snapshot a recorded") == 1
    assert second.add("snapshot b recorded") == 2  # 1 was taken: listed again, took 2
    assert first.add("snapshot c recorded") == 3
    backend.put(GENERATIONS_PREFIX + "07", b"")  # not ours: ignored
    assert first.numbers() == [1, 2, 3]


def test_writers_adding_at_once_each_get_their_own_n(backend):
    with ThreadPoolExecutor(8) as pool:
        taken = list(pool.map(lambda i: Generations(backend).add(f"change {i}"), range(8)))
    assert sorted(taken) == list(range(1, 9))


def test_trim_keeps_the_highest_and_counting_goes_on_from_it(backend):
    generations = Generations(backend)
    for i in range(5):
        generations.add(f"change {i}")
    assert generations.trim(keep=2) == 3
    assert generations.numbers() == [4, 5]
    assert Generations(backend).add("after the trim") == 6


@pytest.mark.parametrize("encryption", [REPOKEY_MODE])
def test_an_encrypted_repositorys_generations_say_what_changed_only_sealed(repo):
    storage = repo.storage
    n = storage.snapshots.generations.add("snapshot 0123456789abcdef of vm1 recorded")
    name = f"{GENERATIONS_PREFIX}{n}"
    sealed = storage.backend.get(name)
    assert b"vm1" not in sealed
    opened = storage.cipher.open_sealed(sealed, associated_data(
        RecordKind.GENERATION, storage.config.repository_id, name.encode()))
    assert json.loads(opened)["change"] == "snapshot 0123456789abcdef of vm1 recorded"
    with pytest.raises(AuthenticationFailed):  # bound to its name: not passed off as another
        storage.cipher.open_sealed(sealed, associated_data(
            RecordKind.GENERATION, storage.config.repository_id, b"generations/99"))
