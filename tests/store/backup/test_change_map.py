"""Change maps: the text format and nbdinfo's JSON, parsed into merged changed ranges."""

from __future__ import annotations

import json

import pytest

from diskvault.errors import BadInput
from diskvault.store.backup.change_map import ChangedRanges, check_fits, parse_change_map


def test_text_map_takes_decimal_and_hex_ignores_comments_and_merges_ranges():
    text = "# nightly map\nbase 0123abcd\n4096 4096\n0x2000 0x1000  # touches the first\n\n100 1\n"
    changes = parse_change_map(text, "m.txt")
    assert changes.base == "0123abcd"
    assert changes.ranges == ((100, 101), (4096, 12288))
    assert changes.changed_bytes == 8193


@pytest.mark.parametrize("line", ["4096", "x 10", "10 -5", "1 2 3", "0xzz 1"])
def test_malformed_text_line_is_refused_naming_file_and_line(line):
    with pytest.raises(BadInput, match=r"change map m\.txt, line 2"):
        parse_change_map(f"0 1\n{line}\n", "m.txt")


def test_nbdinfo_dirty_bitmap_json_keeps_only_dirty_extents():
    entries = [{"offset": 0, "length": 65536, "type": 0, "description": "clean"},
               {"offset": 65536, "length": 131072, "type": 1, "description": "dirty"},
               {"offset": 196608, "length": 65536, "type": 0, "description": "clean"},
               {"offset": 262144, "length": 4096, "type": 1, "description": "dirty"}]
    changes = parse_change_map(json.dumps(entries, indent=2), "map.json")
    assert changes.ranges == ((65536, 196608), (262144, 266240))
    assert changes.base is None


def test_allocation_map_from_nbdinfo_is_refused_as_not_a_change_map():
    entries = [{"offset": 0, "length": 4096, "type": 0, "description": "data"},
               {"offset": 4096, "length": 4096, "type": 3, "description": "hole,zero"}]
    with pytest.raises(BadInput, match="allocation map"):
        parse_change_map(json.dumps(entries), "map.json")


def test_json_that_is_not_nbdinfos_list_is_refused():
    with pytest.raises(BadInput, match="not the JSON list nbdinfo"):
        parse_change_map('[{"start": 1}]', "map.json")


def test_map_reaching_past_the_image_end_is_refused():
    changes = parse_change_map("0 10\n90 20\n", "m")
    with pytest.raises(BadInput, match="past the end of the image"):
        check_fits(changes, 100)


def test_grown_image_counts_its_new_tail_as_changed():
    changed = ChangedRanges(((10, 20),), base_size=100, size=150)
    assert changed.overlaps(15, 16) and changed.overlaps(99, 101)
    assert not changed.overlaps(20, 100) and not changed.overlaps(0, 10)
    assert changed.next_change_end(0) == 20
    assert changed.next_change_end(20) == 150
    assert changed.next_change_end(150) == 150
    assert changed.next_change_start(0) == 10 and changed.next_change_start(15) == 10
    assert changed.next_change_start(20) == 100
    assert changed.next_change_start(150) == float("inf")


@pytest.mark.parametrize("field, raw", [("length", "Infinity"), ("length", "NaN"),
                                        ("length", "4096.7"), ("offset", "1e3"),
                                        ("length", '"4096"'), ("type", "true"),
                                        ("offset", "-1")])
def test_json_count_that_is_not_a_plain_integer_is_refused_not_truncated(field, raw):
    entry = {"offset": "0", "length": "4096", "type": "1", "description": '"dirty"'}
    entry[field] = raw
    text = "[{" + ", ".join(f'"{key}": {value}' for key, value in entry.items()) + "}]"
    with pytest.raises(BadInput, match=rf"map\.json is not the JSON list.*{field}"):
        parse_change_map(text, "map.json")


@pytest.mark.parametrize("word", ["1_000", "+5", "\u0661\u0662", "0x_10"])
def test_text_count_takes_only_ascii_decimal_or_hex_digits(word):
    with pytest.raises(BadInput, match=r"change map m\.txt, line 1"):
        parse_change_map(f"{word} 1\n", "m.txt")
