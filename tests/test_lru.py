"""The one LRU cache: bounded by count or by weight, least recently used out first."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from diskvault.lru import LRU


def test_the_least_recently_used_entry_goes_first():
    cache: LRU[str, int] = LRU(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "b" is now the oldest
    cache.put("c", 3)
    assert "b" not in cache and cache.get("a") == 1 and cache.get("c") == 3


def test_entries_are_weighed_and_the_newest_stays_even_when_too_heavy():
    cache: LRU[str, str] = LRU(100)
    cache.put("small", "s", 40)
    cache.put("medium", "m", 50)
    cache.put("large", "l", 30)
    assert "small" not in cache and len(cache) == 2
    cache.put("huge", "h", 500)
    assert list(cache.values()) == ["h"]


def test_evicted_entries_go_through_on_evict_and_popped_ones_do_not():
    evicted: list[tuple[str, int]] = []
    cache: LRU[str, int] = LRU(1, on_evict=lambda key, value: evicted.append((key, value)))
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.pop("b") == 2
    assert cache.pop("b", -1) == -1
    assert evicted == [("a", 1)] and len(cache) == 0


def test_putting_a_key_again_replaces_its_value_and_weight():
    cache: LRU[str, int] = LRU(10)
    cache.put("a", 1, 8)
    cache.put("a", 2, 1)
    cache.put("b", 3, 9)
    assert cache.get("a") == 2 and cache.get("b") == 3


@given(st.integers(1, 20), st.lists(st.tuples(st.integers(0, 30), st.integers(1, 5))))
def test_the_total_weight_stays_within_capacity_beyond_the_newest_entry(capacity, puts):
    cache: LRU[int, int] = LRU(capacity)
    weights: dict[int, int] = {}
    for key, weight in puts:
        cache.put(key, key, weight)
        weights[key] = weight
        kept = [k for k in weights if k in cache]
        assert key in cache
        assert sum(weights[k] for k in kept) <= max(capacity, weight)
