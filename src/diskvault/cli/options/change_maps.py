"""Reading the change map a backup is given (--changed-ranges, --changed-since)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from ...errors import BadInput
from ...store.backup.change_map import ChangeMap, parse_change_map


def read_change_map(path: Path | None, changed_since: str | None,
                    verify_unchanged: int) -> ChangeMap | None:
    """The map with its base (from the file or --changed-since, which must agree)."""
    if path is None:
        if changed_since is not None or verify_unchanged:
            raise click.UsageError("--changed-since and --verify-unchanged go with "
                                   "--changed-ranges FILE")
        return None
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise BadInput(f"change map {path} cannot be read ({error}); give a text or JSON "
                       f"file (docs/change-maps.md)") from None
    changes = parse_change_map(text, str(path))
    if changed_since is None:
        return changes
    if changes.base is not None and changes.base != changed_since:
        raise BadInput(f"change map {path} names base {changes.base}, but --changed-since "
                       f"says {changed_since}: give one, or make them agree")
    return dataclasses.replace(changes, base=changed_since)
