"""Sizes as people type them: 65536, 64K, 64KiB, 1M, 2GiB, 1.5G, 100MB. K, M, G, T (with or
without "iB") are powers of 1024, as in ls -h, borg and restic; KB, MB, GB, TB are the SI
powers of 1000, as disk vendors write them. The one parser of every size option."""

from __future__ import annotations

import re

import click

from ...errors import BadInput

_BINARY = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_SIZE = re.compile(r"\s*(-?\d+(?:\.\d+)?)\s*([KMGTP]?)(I?B?)\s*", re.IGNORECASE)


def parse_size(text: str) -> int:
    """A whole number of bytes (negative with a '-', for the caller's range check to
    refuse); ValueError, saying what is accepted, for anything else."""
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a size: give bytes (65536) or a number with a unit "
                         f"(64K, 64KiB, 1M, 2GiB; KB, MB, GB are powers of 1000)")
    number, prefix, suffix = match.group(1), match.group(2).upper(), match.group(3).upper()
    if suffix == "B" and prefix:
        unit = 1000 ** ("KMGTP".index(prefix) + 1)
    elif suffix == "I" or (suffix == "IB" and not prefix):
        raise ValueError(f"{text!r} is not a size: 'iB' goes after K, M, G, T or P")
    else:
        unit = _BINARY[prefix]
    size = float(number) * unit
    if size != int(size):
        raise ValueError(f"{text!r} is not a whole number of bytes")
    return int(size)


class ByteSize(click.ParamType):
    """A click option's size, parsed by parse_size, at least ``minimum`` when one is given;
    refused in one line naming the option, as every bad setting is."""

    name = "size"

    def __init__(self, minimum: int | None = None):
        self.minimum = minimum

    def convert(self, value, param, ctx) -> int:
        try:
            size = value if isinstance(value, int) else parse_size(str(value))
        except ValueError as error:
            raise BadInput(f"{param.opts[0]} {value}: {error}") from None
        if self.minimum is not None and size < self.minimum:
            raise BadInput(f"{param.opts[0]} {value}: a size is at least {self.minimum}")
        return size


BYTE_SIZE = ByteSize()
NON_NEGATIVE_SIZE = ByteSize(minimum=0)
