"""Retention rules on plain values: boundaries, gaps, series, windows, and properties."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diskvault.errors import BadInput
from diskvault.maintenance.retention import (KeepPolicy, SnapshotTime, describe_duration,
                                             parse_duration, select_kept)

UTC = timezone.utc
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)  # a Tuesday


def at(text: str, tz: timezone = UTC) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=tz)


def series_of(*times: str, series: str = "vm1") -> list[SnapshotTime]:
    """Snapshots named after their time, so a failing assertion reads as a calendar."""
    return [SnapshotTime(id=f"{series}@{text}", series=series, time=at(text)) for text in times]


def kept_times(snapshots: list[SnapshotTime], policy: KeepPolicy) -> list[str]:
    return [snapshot_id.split("@")[1] for snapshot_id in select_kept(snapshots, policy, NOW)]


# The worked example of docs/retention.md, verbatim: if this changes, change the doc.
def test_worked_example_from_the_docs():
    snapshots = series_of(
        "2026-03-10T03:00", "2026-03-09T03:00", "2026-03-09T01:00", "2026-03-08T03:00",
        "2026-03-04T03:00", "2026-02-28T03:00", "2026-02-15T03:00", "2026-01-31T03:00",
        "2025-12-31T03:00",
    )
    policy = KeepPolicy(daily=3, weekly=2, monthly=3, within=parse_duration("2d"))
    assert select_kept(snapshots, policy, NOW) == {
        "vm1@2026-03-10T03:00": "daily #1, weekly #1, monthly #1, within 2d",
        "vm1@2026-03-09T03:00": "daily #2, within 2d",
        "vm1@2026-03-09T01:00": "within 2d",
        "vm1@2026-03-08T03:00": "daily #3, weekly #2",
        "vm1@2026-02-28T03:00": "monthly #2",
        "vm1@2026-01-31T03:00": "monthly #3",
    }


@pytest.mark.parametrize(
    ("policy", "times", "expected"),
    [
        pytest.param(KeepPolicy(hourly=2), ["2026-03-10T10:59", "2026-03-10T11:00"],
                     ["2026-03-10T11:00", "2026-03-10T10:59"], id="hour-boundary"),
        pytest.param(KeepPolicy(daily=2),
                     ["2026-03-09T23:59:59", "2026-03-10T00:00", "2026-03-10T00:01"],
                     ["2026-03-10T00:01", "2026-03-09T23:59:59"], id="midnight-utc"),
        pytest.param(KeepPolicy(weekly=2),
                     ["2026-03-08T23:59", "2026-03-09T00:00", "2026-03-07T10:00"],
                     ["2026-03-09T00:00", "2026-03-08T23:59"], id="iso-week-starts-monday"),
        pytest.param(KeepPolicy(weekly=2),
                     ["2020-12-31T12:00", "2021-01-03T12:00", "2021-01-04T12:00"],
                     ["2021-01-04T12:00", "2021-01-03T12:00"], id="iso-week-53-spans-new-year"),
        pytest.param(KeepPolicy(monthly=2),
                     ["2026-02-28T23:00", "2026-03-01T00:00", "2026-02-01T00:00"],
                     ["2026-03-01T00:00", "2026-02-28T23:00"], id="month-boundary"),
        pytest.param(KeepPolicy(yearly=3),
                     ["2024-12-31T23:59:59", "2025-01-01T00:00", "2025-06-01T00:00"],
                     ["2025-06-01T00:00", "2024-12-31T23:59:59"], id="year-boundary"),
        pytest.param(KeepPolicy(daily=3),
                     ["2026-02-20T03:00", "2026-03-01T03:00", "2026-03-09T03:00",
                      "2026-02-10T03:00"],
                     ["2026-03-09T03:00", "2026-03-01T03:00", "2026-02-20T03:00"],
                     id="gaps-use-no-period"),
        pytest.param(KeepPolicy(monthly=12), ["2026-01-05T03:00", "2026-03-02T03:00"],
                     ["2026-03-02T03:00", "2026-01-05T03:00"], id="fewer-periods-than-asked"),
        pytest.param(KeepPolicy(last=2),
                     ["2026-03-01T00:00", "2026-03-03T00:00", "2026-03-02T00:00"],
                     ["2026-03-03T00:00", "2026-03-02T00:00"], id="last-n-newest"),
        pytest.param(KeepPolicy(), ["2026-03-01T00:00"], [], id="empty-policy-keeps-nothing"),
    ],
)
def test_period_rules_keep_the_newest_snapshot_of_each_period(policy, times, expected):
    assert kept_times(series_of(*times), policy) == expected


def test_periods_are_cut_in_utc_whatever_zone_a_time_is_given_in():
    plus_two = timezone(timedelta(hours=2))
    snapshots = [
        SnapshotTime("new-year-local", "vm1", at("2025-01-01T01:00", plus_two)),  # 2024 in UTC
        SnapshotTime("late-2024", "vm1", at("2024-12-31T20:00")),
    ]
    assert select_kept(snapshots, KeepPolicy(yearly=2), NOW) == {"new-year-local": "yearly #1"}


def test_each_series_is_judged_on_its_own():
    snapshots = series_of("2026-03-09T03:00", "2026-03-10T03:00", series="vm1") + series_of(
        "2026-01-02T03:00", "2026-01-01T03:00", series="vm2")
    assert select_kept(snapshots, KeepPolicy(last=1), NOW) == {
        "vm1@2026-03-10T03:00": "last #1",
        "vm2@2026-01-02T03:00": "last #1",
    }


def test_equal_times_are_ordered_by_id_whatever_the_input_order():
    time = at("2026-03-10T03:00")
    snapshots = [SnapshotTime(name, "vm1", time) for name in ("b", "c", "a")]
    for order in (snapshots, snapshots[::-1]):
        assert select_kept(order, KeepPolicy(daily=1), NOW) == {"c": "daily #1"}
        assert select_kept(order, KeepPolicy(last=2), NOW) == {"c": "last #1", "b": "last #2"}


def test_keep_within_keeps_the_boundary_and_the_future_but_not_a_microsecond_older():
    window = timedelta(days=2)
    snapshots = [
        SnapshotTime("future", "vm1", NOW + timedelta(hours=1)),
        SnapshotTime("boundary", "vm1", NOW - window),
        SnapshotTime("older", "vm1", NOW - window - timedelta(microseconds=1)),
    ]
    assert select_kept(snapshots, KeepPolicy(within=window), NOW) == {
        "future": "within 2d", "boundary": "within 2d"}


def test_keep_within_alone_removes_a_series_not_backed_up_within_the_window():
    snapshots = series_of("2026-02-01T03:00", "2026-02-02T03:00")
    assert select_kept(snapshots, KeepPolicy(within=timedelta(days=7)), NOW) == {}
    with_last = KeepPolicy(last=1, within=timedelta(days=7))
    assert kept_times(snapshots, with_last) == ["2026-02-02T03:00"]


def test_a_window_reaching_before_year_one_keeps_everything():
    snapshots = series_of("0001-01-02T00:00", "2026-03-01T00:00")
    policy = KeepPolicy(within=timedelta(days=999_999_999))
    assert len(select_kept(snapshots, policy, NOW)) == 2


def test_combined_rules_report_every_rule_that_kept_a_snapshot():
    snapshots = series_of("2026-03-10T03:00", "2026-03-09T03:00")
    policy = KeepPolicy(last=1, hourly=1, daily=2, weekly=1, monthly=1, yearly=1,
                        within=timedelta(hours=12))
    assert select_kept(snapshots, policy, NOW) == {
        "vm1@2026-03-10T03:00": "last #1, hourly #1, daily #1, weekly #1, monthly #1, "
                                "yearly #1, within 12h",
        "vm1@2026-03-09T03:00": "daily #2",
    }


def test_naive_times_and_repeated_ids_are_refused():
    naive = datetime(2026, 3, 10, 3, 0)
    with pytest.raises(ValueError, match="timezone-aware"):
        select_kept([SnapshotTime("a", "vm1", naive)], KeepPolicy(last=1), NOW)
    with pytest.raises(ValueError, match="timezone-aware"):
        select_kept([], KeepPolicy(last=1), naive)
    twice = [SnapshotTime("a", "vm1", NOW), SnapshotTime("a", "vm2", NOW)]
    with pytest.raises(ValueError, match="appears twice"):
        select_kept(twice, KeepPolicy(last=1), NOW)


def test_policy_knows_when_it_is_empty_and_refuses_negative_counts():
    assert KeepPolicy().is_empty()
    assert not KeepPolicy(yearly=1).is_empty()
    assert not KeepPolicy(within=timedelta(hours=1)).is_empty()
    assert not KeepPolicy(tags=frozenset({"release"})).is_empty()
    with pytest.raises(BadInput, match="--keep-tag needs a tag name"):
        KeepPolicy(tags=frozenset({""}))
    with pytest.raises(BadInput, match="--keep-daily must be 0 or more, not -1"):
        KeepPolicy(daily=-1)
    with pytest.raises(BadInput, match="--keep-within must be a positive duration"):
        KeepPolicy(within=timedelta(0))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12h", timedelta(hours=12)),
        ("2d", timedelta(days=2)),
        ("3w", timedelta(weeks=3)),
        ("1m", timedelta(days=31)),
        ("1y", timedelta(days=366)),
        ("1y2m3d", timedelta(days=366 + 62 + 3)),
        ("1w1d1h", timedelta(days=8, hours=1)),
        (" 7d ", timedelta(days=7)),
        ("007d", timedelta(days=7)),
    ],
)
def test_parse_duration_reads_units_largest_first(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text", ["", "   ", "7", "d", "7x", "-1d", "1.5d", "1d2y", "1d1d", "1D", "7 d", "1M", "٣d"])
def test_parse_duration_refuses_what_it_cannot_read(text):
    with pytest.raises(BadInput, match="cannot read duration") as caught:
        parse_duration(text)
    assert caught.value.exit_code == 2
    assert "\n" not in str(caught.value)


def test_parse_duration_refuses_zero_and_absurd_lengths():
    with pytest.raises(BadInput, match="is zero"):
        parse_duration("0d0h")
    with pytest.raises(BadInput, match="too long"):
        parse_duration("99999999999y")


@pytest.mark.parametrize(
    ("duration", "text"),
    [(timedelta(days=2), "2d"), (timedelta(hours=36), "1d12h"), (timedelta(hours=5), "5h"),
     (timedelta(days=1, seconds=90), "1d90s")])
def test_describe_duration_is_compact(duration, text):
    assert describe_duration(duration) == text


# --- properties --------------------------------------------------------------------------

BASE = datetime(2020, 12, 1, tzinfo=UTC)
ZONES = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]

# Minutes over two years (crossing ISO week 53 of 2020), plus a few fixed instants so that
# equal times and crowded periods are common.
instants = st.one_of(
    st.integers(0, 2 * 366 * 24 * 60).map(lambda minutes: BASE + timedelta(minutes=minutes)),
    st.sampled_from([BASE, BASE + timedelta(days=31, hours=23),
                     datetime(2021, 1, 3, 23, tzinfo=UTC)]),
)


tag_sets = st.frozensets(st.sampled_from(["release", "before-upgrade", "audit"]), max_size=2)


@st.composite
def snapshot_lists(draw) -> list[SnapshotTime]:
    entries = draw(st.lists(st.tuples(st.sampled_from(["vm1", "vm2"]), instants,
                                      st.sampled_from(ZONES), tag_sets), max_size=40))
    return [SnapshotTime(f"s{index:02d}", series, instant.astimezone(zone), tags)
            for index, (series, instant, zone, tags) in enumerate(entries)]


counts = st.integers(0, 8)
windows = st.one_of(st.none(), st.integers(1, 800 * 24).map(lambda hours: timedelta(hours=hours)))
policies = st.builds(KeepPolicy, last=counts, hourly=counts, daily=counts, weekly=counts,
                     monthly=counts, yearly=counts, within=windows, tags=tag_sets)
property_now = BASE + timedelta(days=500)

PERIOD_KEYS = {  # written independently of the module, via strftime
    "hourly": "%Y-%m-%d %H", "daily": "%Y-%m-%d", "weekly": "%G-W%V",
    "monthly": "%Y-%m", "yearly": "%Y",
}


@given(snapshot_lists(), policies)
def test_kept_ids_are_a_subset_and_every_reason_names_a_rule(snapshots, policy):
    kept = select_kept(snapshots, policy, property_now)
    assert set(kept) <= {snapshot.id for snapshot in snapshots}
    for reasons in kept.values():
        for reason in reasons.split(", "):
            assert reason.split(" ")[0] in {"last", "within", "tag", *PERIOD_KEYS}


@given(snapshot_lists(), counts)
def test_keep_last_keeps_exactly_the_n_newest_of_each_series(snapshots, count):
    kept = select_kept(snapshots, KeepPolicy(last=count), property_now)
    for series in ("vm1", "vm2"):
        members = sorted((s for s in snapshots if s.series == series),
                         key=lambda s: (s.time, s.id), reverse=True)
        assert [s.id for s in members if s.id in kept] == [s.id for s in members[:count]]


@given(snapshot_lists(), policies, policies)
def test_adding_or_raising_a_rule_never_removes_a_kept_snapshot(snapshots, policy, extra):
    windows_given = [w for w in (policy.within, extra.within) if w is not None]
    larger = KeepPolicy(
        last=policy.last + extra.last, hourly=policy.hourly + extra.hourly,
        daily=policy.daily + extra.daily, weekly=policy.weekly + extra.weekly,
        monthly=policy.monthly + extra.monthly, yearly=policy.yearly + extra.yearly,
        within=max(windows_given) if windows_given else None, tags=policy.tags | extra.tags)
    assert set(select_kept(snapshots, policy, property_now)) <= set(
        select_kept(snapshots, larger, property_now))


@given(snapshot_lists(), st.sampled_from(sorted(PERIOD_KEYS)), st.integers(1, 8))
def test_each_kept_period_keeps_its_newest_snapshot(snapshots, rule, count):
    kept = select_kept(snapshots, KeepPolicy(**{rule: count}), property_now)
    for series in ("vm1", "vm2"):
        newest_in_period: dict[str, SnapshotTime] = {}
        for s in (s for s in snapshots if s.series == series):
            key = s.time.astimezone(UTC).strftime(PERIOD_KEYS[rule])
            if key not in newest_in_period or (s.time, s.id) > (
                    newest_in_period[key].time, newest_in_period[key].id):
                newest_in_period[key] = s
        expected = sorted(newest_in_period.values(), key=lambda s: (s.time, s.id), reverse=True)
        assert [i for i in kept if i in {s.id for s in snapshots if s.series == series}] == [
            s.id for s in expected[:count]]


@given(snapshot_lists(), windows.filter(lambda w: w is not None))
def test_keep_within_keeps_exactly_the_snapshots_inside_the_window(snapshots, window):
    kept = select_kept(snapshots, KeepPolicy(within=window), property_now)
    assert set(kept) == {s.id for s in snapshots if s.time >= property_now - window}


@given(snapshot_lists(), tag_sets)
def test_keep_tag_keeps_exactly_the_snapshots_with_one_of_the_tags(snapshots, tags):
    kept = select_kept(snapshots, KeepPolicy(tags=tags), property_now)
    assert set(kept) == {s.id for s in snapshots if s.tags & tags}
    for snapshot in snapshots:
        if snapshot.id in kept:
            assert kept[snapshot.id] == ", ".join(f"tag {t}" for t in sorted(snapshot.tags & tags))


@given(snapshot_lists(), policies, tag_sets)
def test_a_tag_rule_adds_its_snapshots_to_what_the_other_rules_keep(snapshots, policy, tags):
    without = select_kept(snapshots, KeepPolicy(**{**vars(policy), "tags": frozenset()}),
                          property_now)
    with_tags = select_kept(snapshots, KeepPolicy(**{**vars(policy), "tags": tags}),
                            property_now)
    assert set(with_tags) == set(without) | {s.id for s in snapshots if s.tags & tags}


@settings(max_examples=50)
@given(snapshot_lists(), policies, st.randoms(use_true_random=False))
def test_answer_does_not_depend_on_input_order_or_time_zone(snapshots, policy, rng: random.Random):
    expected = select_kept(snapshots, policy, property_now)
    shuffled = [SnapshotTime(s.id, s.series, s.time.astimezone(rng.choice(ZONES)), s.tags)
                for s in rng.sample(snapshots, len(snapshots))]
    assert select_kept(shuffled, policy, property_now.astimezone(ZONES[1])) == expected
